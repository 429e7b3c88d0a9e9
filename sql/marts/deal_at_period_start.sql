-- Every deal OPEN when each period of mart.period began, as it stood then (its last
-- opportunity_history row created before the period's first day, from mart.deal_state): stage,
-- amount, close date, forecast category. A deal closed before the period began is not in it: a
-- closed deal's state never changes again, and carrying every deal ever closed into every later
-- week would make this table periods x deals (100 weeks x 1M deals) for rows no KPI reads (they
-- all start from the deals open at the period's start). The KPI job registers mart.period for the
-- grain it computes, then this once per grain; coverage, slip and forecast KPIs read it.
SELECT p.period_start, p.period_end, v.opportunity_id, d.owner_id, v.stage_name, v.is_closed, v.is_won,
  v.amount, v.close_date, v.forecast_category
FROM mart.period AS p
JOIN mart.deal_state AS v
  ON v.valid_from < CAST(p.period_start AS TIMESTAMP(6))
  AND (v.valid_to IS NULL OR v.valid_to >= CAST(p.period_start AS TIMESTAMP(6)))
JOIN mart.deal AS d ON d.id = v.opportunity_id
WHERE NOT v.is_closed
