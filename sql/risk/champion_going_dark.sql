-- Champion going dark: a champion who was engaged ({{param:min_earlier_replies}}+ replies in the
-- {{param:lookback_days}} days before the last {{param:window_days}}, answering at least
-- {{param:min_earlier_rate}} of our messages) now answers a much smaller share of at least
-- {{param:min_recent_outreach}} messages (recent reply rate <= {{param:rate_ratio}} x the earlier
-- one), or answers slowly (mean recent reply lag >= {{param:min_lag_days}} days and >=
-- {{param:lag_ratio}} x the earlier one). A champion who was always quiet never fires: the earlier engagement is required.
-- Only the open deals' champions are read (mart.deal_context, which the result is joined to): a
-- champion's counts are their own deal's, and every closed deal's messages cost a probe of the
-- tasks for nothing.
WITH champ AS (
  SELECT DISTINCT opportunity_id, contact_id FROM staging.opportunity_contact_role
  WHERE stakeholder_role = 'champion' AND opportunity_id IN (SELECT opportunity_id FROM mart.deal_context)
),
msg AS (
  SELECT c.opportunity_id, c.contact_id, t.direction, t.created_date
  FROM champ AS c JOIN staging.task AS t ON t.what_id = c.opportunity_id AND t.who_id = c.contact_id
  WHERE t.direction IN ('inbound', 'outbound')
),
windowed AS (
  SELECT *,
    CASE WHEN created_date >= {{as_of_end}} - INTERVAL '{{param:window_days}} days' THEN 'recent'
         WHEN created_date >= {{as_of_end}} - INTERVAL '{{param:window_days}} days' - INTERVAL '{{param:lookback_days}} days' THEN 'earlier' END AS w
  FROM msg
),
lags AS (
  -- Each reply's lag after the latest outreach to that champion before it.
  SELECT i.opportunity_id, i.contact_id, i.w,
    (date_part('epoch', i.created_date) - date_part('epoch', MAX(o.created_date))) / 86400.0 AS lag_days
  FROM windowed AS i
  JOIN windowed AS o ON o.opportunity_id = i.opportunity_id AND o.contact_id = i.contact_id
    AND o.direction = 'outbound' AND o.created_date < i.created_date
  WHERE i.direction = 'inbound' AND i.w IS NOT NULL
  GROUP BY i.opportunity_id, i.contact_id, i.w, i.created_date
),
agg AS (
  SELECT opportunity_id, contact_id,
    SUM(CASE WHEN w = 'recent' AND direction = 'inbound' THEN 1 ELSE 0 END) AS in_recent,
    SUM(CASE WHEN w = 'recent' AND direction = 'outbound' THEN 1 ELSE 0 END) AS out_recent,
    SUM(CASE WHEN w = 'earlier' AND direction = 'inbound' THEN 1 ELSE 0 END) AS in_earlier,
    SUM(CASE WHEN w = 'earlier' AND direction = 'outbound' THEN 1 ELSE 0 END) AS out_earlier,
    MAX(CASE WHEN direction = 'inbound' THEN created_date END) AS last_reply
  FROM windowed GROUP BY opportunity_id, contact_id
),
lag_agg AS (
  SELECT opportunity_id, contact_id,
    AVG(CASE WHEN w = 'recent' THEN lag_days END) AS lag_recent,
    AVG(CASE WHEN w = 'earlier' THEN lag_days END) AS lag_earlier
  FROM lags GROUP BY opportunity_id, contact_id
),
judged AS (
  SELECT g.*, l.lag_recent, l.lag_earlier,
    CAST(g.in_recent AS DOUBLE) / GREATEST(g.out_recent, 1) AS rate_recent,
    CAST(g.in_earlier AS DOUBLE) / GREATEST(g.out_earlier, 1) AS rate_earlier
  FROM agg AS g LEFT JOIN lag_agg AS l ON l.opportunity_id = g.opportunity_id AND l.contact_id = g.contact_id
  WHERE g.in_earlier >= {{param:min_earlier_replies}} AND g.out_recent >= 1
    AND CAST(g.in_earlier AS DOUBLE) / GREATEST(g.out_earlier, 1) >= {{param:min_earlier_rate}}
)
SELECT c.opportunity_id, j.rate_recent AS value,
  c.champion_name || ' (champion) replied to ' || CAST(j.in_earlier AS VARCHAR) || ' of ' || CAST(j.out_earlier AS VARCHAR) ||
  ' messages before the last {{param:window_days}} days, ' || CAST(j.in_recent AS VARCHAR) || ' of ' || CAST(j.out_recent AS VARCHAR) ||
  ' since' ||
  CASE WHEN j.lag_earlier IS NOT NULL AND j.lag_recent IS NOT NULL
       THEN '; reply lag ' || CAST(round(j.lag_earlier, 1) AS VARCHAR) || ' -> ' || CAST(round(j.lag_recent, 1) AS VARCHAR) || ' days' ELSE '' END ||
  '; last reply ' || CAST(CAST(floor((date_part('epoch', {{as_of_end}}) - date_part('epoch', j.last_reply)) / 86400) AS BIGINT) AS VARCHAR) || ' days ago'
  AS evidence
FROM judged AS j JOIN mart.deal_context AS c ON c.opportunity_id = j.opportunity_id
WHERE (j.out_recent >= {{param:min_recent_outreach}} AND j.rate_recent <= {{param:rate_ratio}} * j.rate_earlier)
   OR (j.lag_recent >= {{param:min_lag_days}} AND (j.lag_earlier IS NULL OR j.lag_recent >= {{param:lag_ratio}} * j.lag_earlier))
