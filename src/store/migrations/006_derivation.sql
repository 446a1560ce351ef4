-- Derived data follows its inputs. A file's phones are a function of its bytes and of what
-- they were derived with: the program and parser version, the default region and the
-- source's filters. `derived_with` is the key of those; a file whose key differs from the
-- current one is read and parsed again even if its fingerprint did not move (NULL: stored by
-- an older version, so derived again once).
ALTER TABLE source_file ADD COLUMN derived_with INTEGER;
-- Racily clean (as git calls it): the file's mtime was not clearly older than the read that
-- recorded it, so a rewrite of the same size within the file system's timestamp granularity
-- would leave the fingerprint unchanged. Such a file is read again by the next pass.
ALTER TABLE source_file ADD COLUMN racy INTEGER NOT NULL DEFAULT 0;
