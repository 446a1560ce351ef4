-- A contact is known by a key: its number in E.164 (`+4915…`) or, for a card with a Telegram
-- username and no number, `@` and the username in lower case (Telegram compares usernames
-- case-insensitively). The columns that held E.164 now hold that key; rows carry over as
-- they are, since every stored E.164 is already a valid key.
ALTER TABLE card_phone RENAME COLUMN e164 TO contact_key;
ALTER TABLE mirror RENAME COLUMN e164 TO contact_key;
ALTER TABLE outbox_item RENAME COLUMN e164 TO contact_key;
DROP INDEX card_phone_e164;
CREATE INDEX card_phone_contact_key ON card_phone (contact_key);
-- A number's row also names the card's Telegram username, if any: the number wins, and the
-- username is tried when the number turns out to have no Telegram account.
ALTER TABLE card_phone ADD COLUMN telegram_username TEXT;
