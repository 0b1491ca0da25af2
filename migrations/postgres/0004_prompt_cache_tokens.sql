-- Of input_tokens, those read from and written to the provider's prompt cache: they are billed
-- at other prices (a read at a tenth of the input price on Anthropic, a write at 1.25 times).
-- A constant default adds the columns without rewriting the table.
ALTER TABLE inference_logs
    ADD COLUMN cache_read_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0;
