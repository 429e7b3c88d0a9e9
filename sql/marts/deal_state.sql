-- Every state a deal has been in, known on the run date: each opportunity_history row holds from
-- its own time until the deal's next row (ties broken by row id, the later id holding; NULL: still
-- holds), with its stage's closed and won flags. The KPI snapshots (deal_at_period_start/_end) read
-- "the state at instant T" from it as valid_from < T AND (valid_to IS NULL OR valid_to >= T).
-- The next row is read in one ordered pass, and counts only when it is the same deal's (see "One
-- ordered pass" in the README).
SELECT h.opportunity_id, h.created_date AS valid_from,
  CASE WHEN LEAD(h.opportunity_id) OVER w IS NOT DISTINCT FROM h.opportunity_id THEN LEAD(h.created_date) OVER w END AS valid_to,
  h.stage_name, st.is_closed, st.is_won, h.amount, h.close_date, h.forecast_category
FROM staging.opportunity_history AS h
LEFT JOIN staging.opportunity_stage AS st ON st.master_label = h.stage_name
WHERE h.created_date IS NOT NULL
WINDOW w AS (ORDER BY h.opportunity_id, h.created_date, h.id)
