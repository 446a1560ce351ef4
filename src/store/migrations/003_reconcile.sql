-- Reconciliation with the remote list: when it last ran and the list hash it saw.
ALTER TABLE account ADD COLUMN last_reconcile INTEGER;
ALTER TABLE account ADD COLUMN remote_hash INTEGER;
-- For saved numbers without an account: how many Telegram users have them too.
ALTER TABLE mirror ADD COLUMN importers INTEGER;
