-- `remote forget-all`: the account is to hold nothing contactsyncd added. While set, every
-- plan for it wants nothing (so everything of ours is deleted, through the outbox, resumable
-- after a crash) and nothing is added; `remote resume` clears it.
ALTER TABLE account ADD COLUMN forgetting INTEGER NOT NULL DEFAULT 0;
