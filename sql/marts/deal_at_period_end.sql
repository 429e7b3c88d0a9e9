-- The deals open when each period began (mart.deal_at_period_start) as they stood at its end
-- (their last opportunity_history row created on or before the period's last day; for the current
-- period, the run's as-of date): closed, won, slipped or still open.
WITH version AS (
  SELECT h.opportunity_id, h.created_date AS valid_from,
    LEAD(h.created_date) OVER (PARTITION BY h.opportunity_id ORDER BY h.created_date, h.id) AS valid_to,
    h.stage_name, h.amount, h.close_date, h.forecast_category
  FROM staging.opportunity_history AS h
  WHERE h.created_date IS NOT NULL
)
SELECT s.period_start, s.period_end, s.opportunity_id, s.owner_id, v.stage_name, st.is_closed, st.is_won,
  v.amount, v.close_date, v.forecast_category
FROM mart.deal_at_period_start AS s
JOIN version AS v
  ON v.opportunity_id = s.opportunity_id
  AND v.valid_from < CAST(s.period_end AS TIMESTAMP(6)) + INTERVAL '1 day'
  AND (v.valid_to IS NULL OR v.valid_to >= CAST(s.period_end AS TIMESTAMP(6)) + INTERVAL '1 day')
LEFT JOIN staging.opportunity_stage AS st ON st.master_label = v.stage_name
