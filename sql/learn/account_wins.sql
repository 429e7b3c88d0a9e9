-- When each account won a deal: the first time each deal entered a won stage, as known by the run
-- date. The account-priority model reads this only to label past snapshots (did the account win
-- within the window after them), never as a feature.
SELECT o.account_id, MIN(h.created_date) AS won_at
FROM staging.opportunity_history AS h
JOIN staging.opportunity_stage AS s ON s.master_label = h.stage_name
JOIN staging.opportunity AS o ON o.id = h.opportunity_id
WHERE s.is_won AND o.account_id IS NOT NULL
GROUP BY o.account_id, h.opportunity_id
