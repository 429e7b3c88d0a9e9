-- Competition emerging: competitor mentioned on the deal's calls at least {{param:min_mentions}}
-- times in the last {{param:window_days}} days, and more often than in the window before (rising).
WITH m AS (
  SELECT opportunity_id, phrase,
    CASE WHEN mentioned_at >= {{as_of_end}} - INTERVAL '{{param:window_days}} days' THEN 1 ELSE 0 END AS recent,
    CASE WHEN mentioned_at < {{as_of_end}} - INTERVAL '{{param:window_days}} days'
          AND mentioned_at >= {{as_of_end}} - INTERVAL '{{param:window_days}} days' - INTERVAL '{{param:window_days}} days' THEN 1 ELSE 0 END AS earlier
  FROM staging.tracker_mention
  -- Open deals only (the result is joined to mart.deal_context): no closed deal's mentions grouped.
  WHERE topic = 'competitor' AND opportunity_id IN (SELECT opportunity_id FROM mart.deal_context)
),
agg AS (
  SELECT opportunity_id, SUM(recent) AS recent, SUM(earlier) AS earlier,
    string_agg(DISTINCT phrase, ', ') AS names
  FROM m GROUP BY opportunity_id
)
SELECT c.opportunity_id, CAST(g.recent AS DOUBLE) AS value,
  'competitor mentioned ' || CAST(g.recent AS VARCHAR) || ' times in the last {{param:window_days}} days (' ||
  CAST(g.earlier AS VARCHAR) || ' in the {{param:window_days}} before)' ||
  CASE WHEN g.names IS NOT NULL THEN ': ' || g.names ELSE '' END AS evidence
FROM agg AS g JOIN mart.deal_context AS c ON c.opportunity_id = g.opportunity_id
WHERE g.recent >= {{param:min_mentions}} AND g.recent > g.earlier
