-- `GET /api/v1/llm/usage` sums one user's provider calls over a time window.
CREATE INDEX inference_logs_user_created ON inference_logs (user_id, created_at);
