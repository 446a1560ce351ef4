-- Issue 21: whether a batch's last send has no known outcome (the connection was lost after
-- the request was written, or the process died before the reply was applied). Only such a
-- resend may read a WhatsApp 409 as "maybe our own earlier add"; a batch refused by a wait
-- or a 429 was not applied and is not a resend. `send_count` stays a plain counter for
-- `state batches`, never read to infer what the other side did.
ALTER TABLE outbox_batch ADD COLUMN resend INTEGER NOT NULL DEFAULT 0;
-- A batch left 'sent' by an older version has no known outcome.
UPDATE outbox_batch SET resend = 1 WHERE state = 'sent';
