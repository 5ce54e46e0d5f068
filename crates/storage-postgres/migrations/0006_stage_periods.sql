-- The stages most often failed, with a year of calls (the dashboard's
-- period «год»): counting them meant joining every call of the period to
-- its stage results. Each stage result now carries its call's time and
-- manager (neither changes once the call is stored), so that the count
-- reads the stage results of the period alone: the whole table for a year,
-- a range of `stage_results_by_period` (an index-only scan) for a month.

ALTER TABLE stage_results ADD COLUMN occurred_at TIMESTAMPTZ, ADD COLUMN manager_id TEXT;
UPDATE stage_results s SET occurred_at = c.occurred_at, manager_id = c.manager_id
FROM calls c WHERE c.seq = s.call_seq;
ALTER TABLE stage_results ALTER COLUMN occurred_at SET NOT NULL,
                          ALTER COLUMN manager_id SET NOT NULL;

CREATE INDEX stage_results_by_period
    ON stage_results (occurred_at, checklist_id, stage_id, status, manager_id);
