-- Which Telegram user an account's mirror and outbox belong to: a login that lands on
-- another user sets them aside (renamed `telegram@<old user id>`) instead of using them.
-- Filled from the session of a database upgraded while logged in.
ALTER TABLE account ADD COLUMN remote_user_id INTEGER;
UPDATE account SET remote_user_id = (SELECT user_id FROM telegram_session WHERE id = 1)
WHERE backend = 'telegram';
-- `remote_hash` (migration 003) now holds the getContacts hash of the last full list the
-- mirror was reconciled with; any batch sent clears it, so our own writes never meet a
-- stale "not modified". Start without one.
UPDATE account SET remote_hash = NULL;
-- A hold that is a rejection (a number the server refused by name), tried again when the
-- card changes or at hold_until (a day later); other holds are retries or
-- `on_remote_delete = keep`. Old rejections had no retry time.
ALTER TABLE mirror ADD COLUMN hold_rejected INTEGER NOT NULL DEFAULT 0;
UPDATE mirror SET hold_rejected = 1
WHERE hold_first_name IS NOT NULL AND hold_until IS NULL
  AND coalesce(hold_reason, '') NOT LIKE 'deleted in the app%';
-- A delete the server refused by name: not planned again before delete_hold_until.
ALTER TABLE mirror ADD COLUMN delete_hold_until INTEGER;
ALTER TABLE mirror ADD COLUMN delete_hold_reason TEXT;
-- The number Telegram now shows for one of our contacts, when it is not the one imported
-- (the contact changed their number): reconciliation matches by user id, `status` reports it.
ALTER TABLE mirror ADD COLUMN remote_phone TEXT;
