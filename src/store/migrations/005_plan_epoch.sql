-- Skipping passes with nothing to do. `epoch` moves with every change to what planning
-- reads besides the files: the mirror, and batches sent, applied or dropped (a batch being
-- queued does not move it: the plan that queued it already counts it as in flight). A
-- plan that left nothing to do records the key of the configuration and program that made
-- it and the epoch it read; a later pass that finds every file unchanged, the same key and
-- the same epoch would plan nothing again and is skipped. A file change clears the record.
CREATE TABLE plan_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    planned_key TEXT,
    planned_epoch INTEGER,
    contacts INTEGER,
    name_conflicts INTEGER
);
INSERT INTO plan_epoch (id, epoch) VALUES (1, 0);
CREATE TRIGGER mirror_insert_moves_epoch AFTER INSERT ON mirror
BEGIN UPDATE plan_epoch SET epoch = epoch + 1; END;
CREATE TRIGGER mirror_update_moves_epoch AFTER UPDATE ON mirror
BEGIN UPDATE plan_epoch SET epoch = epoch + 1; END;
CREATE TRIGGER mirror_delete_moves_epoch AFTER DELETE ON mirror
BEGIN UPDATE plan_epoch SET epoch = epoch + 1; END;
CREATE TRIGGER batch_update_moves_epoch AFTER UPDATE ON outbox_batch
BEGIN UPDATE plan_epoch SET epoch = epoch + 1; END;
CREATE TRIGGER batch_delete_moves_epoch AFTER DELETE ON outbox_batch
BEGIN UPDATE plan_epoch SET epoch = epoch + 1; END;
