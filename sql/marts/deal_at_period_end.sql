-- The deals open when each period began (mart.deal_at_period_start) as they stood at its end
-- (their last opportunity_history row created on or before the period's last day, from
-- mart.deal_state; for the current period, the run's as-of date): closed, won, slipped or open.
SELECT s.period_start, s.period_end, s.opportunity_id, s.owner_id, v.stage_name, v.is_closed, v.is_won,
  v.amount, v.close_date, v.forecast_category
FROM mart.deal_at_period_start AS s
JOIN mart.deal_state AS v
  ON v.opportunity_id = s.opportunity_id
  AND v.valid_from < CAST(s.period_end AS TIMESTAMP(6)) + INTERVAL '1 day'
  AND (v.valid_to IS NULL OR v.valid_to >= CAST(s.period_end AS TIMESTAMP(6)) + INTERVAL '1 day')
