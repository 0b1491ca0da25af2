-- A submission whose command the broker refuses (a full queue) is taken back: its record is
-- deleted, so that the client's retry with the same Idempotency-Key makes the job anew. A
-- retry that arrives before the take-back is answered with the job as it stands; once it has
-- been, the job must stand. The retry marks it so (`Store::replayed_job`), and the take-back
-- (`Store::delete_unstarted_job`) leaves a marked job to the sweeper. A constant default adds
-- the column without rewriting the table.
ALTER TABLE jobs ADD COLUMN replayed INTEGER NOT NULL DEFAULT 0;
