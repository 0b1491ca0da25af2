-- The retention sweep deletes cached extractions by their last use, in batches, least recently
-- used first. Without an index each batch would read every row, and `last_used_at` comes after
-- `result` in a row: reading it walks the result's overflow pages.
CREATE INDEX extraction_cache_last_used ON extraction_cache (last_used_at);
