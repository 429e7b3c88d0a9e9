-- Every deal as it stood when each period of mart.period began (its last opportunity_history row
-- created before the period's first day): stage, amount, close date, forecast category. The KPI
-- job registers mart.period for the grain it computes, then this once per grain; coverage, slip
-- and forecast KPIs read it instead of rebuilding the snapshot each.
SELECT s.period_start, s.period_end, s.opportunity_id, d.owner_id, s.stage_name, st.is_closed, st.is_won,
  s.amount, s.close_date, s.forecast_category
FROM (
  -- The last row per (period, deal) by a hash aggregate, with the row id as the tie-break.
  SELECT p.period_start, p.period_end, h.opportunity_id,
    first_value(h.stage_name ORDER BY h.created_date DESC, h.id DESC) AS stage_name,
    first_value(h.amount ORDER BY h.created_date DESC, h.id DESC) AS amount,
    first_value(h.close_date ORDER BY h.created_date DESC, h.id DESC) AS close_date,
    first_value(h.forecast_category ORDER BY h.created_date DESC, h.id DESC) AS forecast_category
  FROM mart.period AS p
  JOIN staging.opportunity_history AS h ON h.created_date < CAST(p.period_start AS TIMESTAMP(6))
  GROUP BY p.period_start, p.period_end, h.opportunity_id
) AS s
JOIN mart.deal AS d ON d.id = s.opportunity_id
LEFT JOIN staging.opportunity_stage AS st ON st.master_label = s.stage_name
