-- Of input_tokens, those read from and written to the provider's prompt cache: they are billed
-- at other prices (a read at a tenth of the input price on Anthropic, a write at 1.25 times).
ALTER TABLE inference_logs ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inference_logs ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
