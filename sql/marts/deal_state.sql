-- Every state a deal has been in, known on the run date: each opportunity_history row holds from
-- its own time until the deal's next row (ties broken by row id, the later id holding; NULL: still
-- holds), with its stage's closed and won flags. The KPI snapshots (deal_at_period_start/_end) read
-- "the state at instant T" from it as valid_from < T AND (valid_to IS NULL OR valid_to >= T).
SELECT h.opportunity_id, h.created_date AS valid_from,
  LEAD(h.created_date) OVER (PARTITION BY h.opportunity_id ORDER BY h.created_date, h.id) AS valid_to,
  h.stage_name, st.is_closed, st.is_won, h.amount, h.close_date, h.forecast_category
FROM staging.opportunity_history AS h
LEFT JOIN staging.opportunity_stage AS st ON st.master_label = h.stage_name
WHERE h.created_date IS NOT NULL
