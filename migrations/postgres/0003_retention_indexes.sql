-- The retention sweep deletes cached extractions by their last use, in batches, least recently
-- used first: an index so that each batch does not read the whole table.
CREATE INDEX extraction_cache_last_used ON extraction_cache (last_used_at);
