-- WhatsApp ownership (issue 13). Mirror states gain 'user' (a number the user had already
-- saved on the phone: never renamed or deleted) and 'unverified' (maybe ours, not yet
-- checked against the phone's list: left alone until the next reconcile decides).
--
-- Earlier versions took a 404 for success and a 409 (already saved) for their own contact:
-- what they recorded for WhatsApp is not trusted. The rows become unverified and the next
-- reconcile (made due at once) re-derives them from the gateway's listing.
UPDATE mirror SET state = 'unverified'
 WHERE backend = 'whatsapp' AND state IN ('imported', 'saved');
UPDATE account SET last_reconcile = NULL WHERE backend = 'whatsapp';
-- An account whose configuration does not work (a base_url that answers 404): stopped,
-- with the reason, until the configuration changes (`setup_key` identifies the one that
-- failed; no secret is stored, only a hash).
ALTER TABLE account ADD COLUMN setup_error TEXT;
ALTER TABLE account ADD COLUMN setup_key TEXT;
-- A reconcile that would have taken more of our contacts as deleted on the phone than the
-- safety limits allow: held (nothing applied) until --force-delete, like deletions.
ALTER TABLE account ADD COLUMN reconcile_held INTEGER;
ALTER TABLE account ADD COLUMN reconcile_held_reason TEXT;
