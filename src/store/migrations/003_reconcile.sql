-- Reconciliation with the remote list: when it last ran and the list hash it saw.
ALTER TABLE account ADD COLUMN last_reconcile INTEGER;
ALTER TABLE account ADD COLUMN remote_hash INTEGER;
