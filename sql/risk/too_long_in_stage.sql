-- Too long in the current stage: longer than the {{param:percentile}} quantile of the time won deals
-- spent in that stage before moving on (same size band when at least {{param:min_won_sample}} such
-- exits are known on the run date, else all sizes).
WITH won_exits AS (
  SELECT e.from_stage, d.size_band, e.days_in_stage
  FROM mart.stage_exit AS e JOIN mart.deal AS d ON d.id = e.opportunity_id
  WHERE d.is_won AND e.moved_forward
),
by_band AS (
  SELECT from_stage, size_band, COUNT(*) AS n,
    percentile_cont({{param:percentile}}) WITHIN GROUP (ORDER BY days_in_stage) AS limit_days
  FROM won_exits GROUP BY from_stage, size_band
),
by_stage AS (
  SELECT from_stage, COUNT(*) AS n,
    percentile_cont({{param:percentile}}) WITHIN GROUP (ORDER BY days_in_stage) AS limit_days
  FROM won_exits GROUP BY from_stage
)
SELECT c.opportunity_id, CAST(c.days_in_stage AS DOUBLE) AS value,
  'in ' || c.stage_name || ' for ' || CAST(c.days_in_stage AS VARCHAR) || ' days; won deals ' ||
  CASE WHEN b.n IS NOT NULL THEN 'of size ' || c.size_band || ' ' ELSE '' END ||
  'left ' || c.stage_name || ' within ' || CAST(CAST(round(COALESCE(b.limit_days, s.limit_days)) AS BIGINT) AS VARCHAR) ||
  ' days in ' || CAST(CAST({{param:percentile}} * 100 AS BIGINT) AS VARCHAR) || '% of cases (n=' ||
  CAST(COALESCE(b.n, s.n) AS VARCHAR) || ')' AS evidence
FROM mart.deal_context AS c
LEFT JOIN by_band AS b ON b.from_stage = c.stage_name AND b.size_band = c.size_band AND b.n >= {{param:min_won_sample}}
LEFT JOIN by_stage AS s ON s.from_stage = c.stage_name AND s.n >= {{param:min_won_sample}}
WHERE c.days_in_stage > COALESCE(b.limit_days, s.limit_days)
