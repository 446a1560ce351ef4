-- A source's Telegram usernames (contacts known by `@username`), counted apart from its
-- phone numbers: `status` said "266 phones" where the cards held 265 numbers and one
-- username. Until the next scan writes the row again, an old row counts 0 usernames.
ALTER TABLE source_status ADD COLUMN usernames INTEGER NOT NULL DEFAULT 0;
