-- The readout's units: every deal with its owner, the day it was created and the first time it
-- entered a won stage, as known by the run date (the staged, as-of tables). A rollout's readout
-- counts a deal as won when that happened within the horizon after its creation.
SELECT o.id AS opportunity_id,
       o.owner_id,
       CAST(CAST(o.created_date AS DATE) AS VARCHAR) AS created_day,
       CAST(CAST(MIN(CASE WHEN s.is_won THEN h.created_date END) AS DATE) AS VARCHAR) AS won_day
FROM staging.opportunity AS o
LEFT JOIN staging.opportunity_history AS h ON h.opportunity_id = o.id
LEFT JOIN staging.opportunity_stage AS s ON s.master_label = h.stage_name
WHERE o.owner_id IS NOT NULL AND o.created_date IS NOT NULL
GROUP BY o.id, o.owner_id, CAST(CAST(o.created_date AS DATE) AS VARCHAR)
