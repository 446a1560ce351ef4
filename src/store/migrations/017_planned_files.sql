-- The files a settled plan was made from, as one digest of every stored file's path, source,
-- fingerprint and derivation key (`store::FilesDigest`), or NULL when a stored file could
-- not vouch for its content (deferred, racily clean): a pass over unchanged files compares
-- its listing with it instead of reading every file's record (issue 24.4).
ALTER TABLE plan_epoch ADD COLUMN planned_files TEXT;
