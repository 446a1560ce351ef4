-- The daemon's quick pass looks up every card that carries one number (the name rule
-- needs them all) without reading the whole table.
CREATE INDEX card_phone_e164 ON card_phone (e164);
