-- Every deal as it stood when each period of mart.period began (its last opportunity_history row
-- created before the period's first day): stage, amount, close date, forecast category. The KPI
-- job registers mart.period for the grain it computes, then this once per grain; coverage, slip
-- and forecast KPIs read it instead of rebuilding the snapshot each.
SELECT s.period_start, s.period_end, s.opportunity_id, d.owner_id, s.stage_name, st.is_closed, st.is_won,
  s.amount, s.close_date, s.forecast_category
FROM (
  SELECT p.period_start, p.period_end, h.opportunity_id, h.stage_name, h.amount, h.close_date, h.forecast_category,
    ROW_NUMBER() OVER (PARTITION BY p.period_start, h.opportunity_id ORDER BY h.created_date DESC, h.id DESC) AS rk
  FROM mart.period AS p
  JOIN staging.opportunity_history AS h ON h.created_date < CAST(p.period_start AS TIMESTAMP)
) AS s
JOIN mart.deal AS d ON d.id = s.opportunity_id
LEFT JOIN staging.opportunity_stage AS st ON st.master_label = s.stage_name
WHERE s.rk = 1
