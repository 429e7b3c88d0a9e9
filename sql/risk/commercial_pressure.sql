-- Commercial pressure: discount requests on calls in the last {{param:window_days}} days, the amount
-- cut, or the close date pushed out in that time; fires on {{param:min_signals}} or more.
-- The amount and close date before each history row: one ordered pass, the row before counting
-- only when it is the same deal's (see "One ordered pass" in the README).
WITH h AS (
  SELECT opportunity_id, created_date, amount, close_date,
    CASE WHEN LAG(opportunity_id) OVER w IS NOT DISTINCT FROM opportunity_id THEN LAG(amount) OVER w END AS previous_amount,
    CASE WHEN LAG(opportunity_id) OVER w IS NOT DISTINCT FROM opportunity_id THEN LAG(close_date) OVER w END AS previous_close
  FROM staging.opportunity_history
  WINDOW w AS (ORDER BY opportunity_id, created_date, id)
),
changes AS (
  SELECT opportunity_id,
    SUM(CASE WHEN amount < previous_amount THEN 1 ELSE 0 END) AS cuts,
    MIN(CASE WHEN amount < previous_amount THEN previous_amount END) AS amount_before,
    SUM(CASE WHEN close_date > previous_close AND created_date >= {{as_of_end}} - INTERVAL '{{param:window_days}} days' THEN 1 ELSE 0 END) AS pushes
  FROM h GROUP BY opportunity_id
),
asks AS (
  SELECT opportunity_id, COUNT(*) AS discount_asks
  FROM staging.tracker_mention
  WHERE topic = 'discount'
    AND mentioned_at >= {{as_of_end}} - INTERVAL '{{param:window_days}} days'
  GROUP BY opportunity_id
),
signals AS (
  SELECT c.opportunity_id, c.amount, COALESCE(a.discount_asks, 0) AS asks, COALESCE(ch.cuts, 0) AS cuts,
    ch.amount_before, COALESCE(ch.pushes, 0) AS pushes,
    (CASE WHEN COALESCE(a.discount_asks, 0) > 0 THEN 1 ELSE 0 END) + (CASE WHEN COALESCE(ch.cuts, 0) > 0 THEN 1 ELSE 0 END)
      + (CASE WHEN COALESCE(ch.pushes, 0) > 0 THEN 1 ELSE 0 END) AS n_signals
  FROM mart.deal_context AS c
  LEFT JOIN asks AS a ON a.opportunity_id = c.opportunity_id
  LEFT JOIN changes AS ch ON ch.opportunity_id = c.opportunity_id
)
SELECT opportunity_id, CAST(n_signals AS DOUBLE) AS value,
  concat_ws('; ',
    CASE WHEN asks > 0 THEN CAST(asks AS VARCHAR) || ' discount request(s) on calls in the last {{param:window_days}} days' END,
    CASE WHEN cuts > 0 THEN 'amount cut from ' || CAST(amount_before AS VARCHAR) || ' to ' || CAST(amount AS VARCHAR) END,
    CASE WHEN pushes > 0 THEN 'close date pushed out ' || CAST(pushes AS VARCHAR) || ' time(s) in the last {{param:window_days}} days' END
  ) AS evidence
FROM signals WHERE n_signals >= {{param:min_signals}}
