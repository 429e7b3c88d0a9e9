-- Momentum: the buyer's engagement, time-decayed, per open deal and per account, as of the run
-- date, with the counts its trend is judged on.
-- A touch is something the buyer did: a reply or an inbound message (a task whose lake-profile
-- direction is inbound) or a meeting held (an event). What the seller sent is reported beside it
-- (outbound) but is not momentum: a rep mailing a silent buyer is not a deal moving.
-- momentum = sum over touches of 0.5 ^ (age in days / {{half_life_days}}): a touch today counts 1,
-- one a half-life ago 0.5. recent = touches in the last 28 days, previous = the 28 before; the
-- engine calls the trend rising or falling only when an exact binomial test of recent against
-- recent + previous says so (see data/contract/outputs/momentum.md).
-- Accounts also carry product usage where it landed: active users summed over the same windows.
-- Slots: {{as_of_end}} (the first instant after the run date), {{half_life_days}}.
-- A touch logged on a deal without an account of its own counts for the deal's account.
-- Two steps (`-- @step <table>`: each is run and registered as that table before the next): the
-- aged touches are read by the deals' and the accounts' sums, and DataFusion inlines a CTE at each
-- reference, so as one query the 182 days of tasks were filtered and joined twice (2.0 to 2.3 s on
-- a million deals; 1.2 s in two steps).
-- @step mart._momentum_aged
WITH touches AS (
  SELECT t.what_id AS opportunity_id, COALESCE(t.account_id, o.account_id) AS account_id, t.created_date AS at,
    CASE WHEN t.direction = 'inbound' THEN 'buyer' WHEN t.direction = 'outbound' THEN 'seller' END AS side
  FROM staging.task AS t
  LEFT JOIN staging.opportunity AS o ON o.id = t.what_id
  WHERE t.created_date < {{as_of_end}} AND t.created_date >= {{as_of_end}} - INTERVAL '182 days'
  UNION ALL
  SELECT e.what_id, COALESCE(e.account_id, o.account_id), COALESCE(e.start_date_time, e.created_date), 'buyer'
  FROM staging.event AS e
  LEFT JOIN staging.opportunity AS o ON o.id = e.what_id
  WHERE COALESCE(e.start_date_time, e.created_date) < {{as_of_end}}
    AND e.created_date < {{as_of_end}}
    AND COALESCE(e.start_date_time, e.created_date) >= {{as_of_end}} - INTERVAL '182 days'
)
SELECT opportunity_id, account_id, side,
  CAST(date_part('epoch', {{as_of_end}} - at) AS DOUBLE) / 86400.0 AS age_days
FROM touches
-- @step momentum
WITH aged AS (SELECT * FROM mart._momentum_aged),
open_deals AS (
  SELECT id, account_id FROM staging.opportunity WHERE NOT COALESCE(is_closed, false)
),
deal_rows AS (
  SELECT 'opportunity' AS subject_type, d.id AS subject_id, d.account_id,
    SUM(CASE WHEN a.side = 'buyer' THEN power(0.5, a.age_days / {{half_life_days}}) ELSE 0 END) AS momentum,
    SUM(CASE WHEN a.side = 'buyer' AND a.age_days < 28 THEN 1 ELSE 0 END) AS recent,
    SUM(CASE WHEN a.side = 'buyer' AND a.age_days >= 28 AND a.age_days < 56 THEN 1 ELSE 0 END) AS previous,
    SUM(CASE WHEN a.side = 'seller' AND a.age_days < 28 THEN 1 ELSE 0 END) AS seller_recent,
    MIN(CASE WHEN a.side = 'buyer' THEN a.age_days END) AS days_since_buyer_touch
  FROM open_deals AS d
  LEFT JOIN aged AS a ON a.opportunity_id = d.id
  GROUP BY d.id, d.account_id
),
-- Accounts: every account with an open deal, a touch or product usage in the last 56 days.
account_touch AS (
  SELECT account_id,
    SUM(CASE WHEN side = 'buyer' THEN power(0.5, age_days / {{half_life_days}}) ELSE 0 END) AS momentum,
    SUM(CASE WHEN side = 'buyer' AND age_days < 28 THEN 1 ELSE 0 END) AS recent,
    SUM(CASE WHEN side = 'buyer' AND age_days >= 28 AND age_days < 56 THEN 1 ELSE 0 END) AS previous,
    SUM(CASE WHEN side = 'seller' AND age_days < 28 THEN 1 ELSE 0 END) AS seller_recent,
    MIN(CASE WHEN side = 'buyer' THEN age_days END) AS days_since_buyer_touch
  FROM aged WHERE account_id IS NOT NULL
  GROUP BY account_id
),
usage AS (
  SELECT account_id,
    SUM(CASE WHEN usage_date >= CAST({{as_of_end}} - INTERVAL '28 days' AS DATE) THEN active_users ELSE 0 END) AS usage_recent,
    SUM(CASE WHEN usage_date < CAST({{as_of_end}} - INTERVAL '28 days' AS DATE) THEN active_users ELSE 0 END) AS usage_previous
  FROM staging.usage_daily
  WHERE usage_date < CAST({{as_of_end}} AS DATE) AND usage_date >= CAST({{as_of_end}} - INTERVAL '56 days' AS DATE)
  GROUP BY account_id
),
accounts AS (
  SELECT account_id FROM open_deals WHERE account_id IS NOT NULL
  UNION
  SELECT account_id FROM account_touch WHERE recent + previous > 0
  UNION
  SELECT account_id FROM usage WHERE usage_recent + usage_previous > 0
)
SELECT subject_type, subject_id, account_id, COALESCE(momentum, 0.0) AS momentum,
  CAST(COALESCE(recent, 0) AS BIGINT) AS recent, CAST(COALESCE(previous, 0) AS BIGINT) AS previous,
  CAST(COALESCE(seller_recent, 0) AS BIGINT) AS seller_recent, days_since_buyer_touch,
  CAST(NULL AS DOUBLE) AS usage_recent, CAST(NULL AS DOUBLE) AS usage_previous
FROM deal_rows
UNION ALL
SELECT 'account', a.account_id, a.account_id AS account_id_again, COALESCE(t.momentum, 0.0),
  CAST(COALESCE(t.recent, 0) AS BIGINT), CAST(COALESCE(t.previous, 0) AS BIGINT),
  CAST(COALESCE(t.seller_recent, 0) AS BIGINT), t.days_since_buyer_touch,
  CAST(u.usage_recent AS DOUBLE), CAST(u.usage_previous AS DOUBLE)
FROM accounts AS a
LEFT JOIN account_touch AS t ON t.account_id = a.account_id
LEFT JOIN usage AS u ON u.account_id = a.account_id
