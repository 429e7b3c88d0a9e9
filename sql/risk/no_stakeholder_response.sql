-- No stakeholder response: at least {{param:min_outreach}} outbound emails or calls on the deal in
-- the last {{param:days}} days and no inbound reply from anyone in that time.
WITH t AS (
  SELECT what_id AS opportunity_id, direction, created_date FROM staging.task
  -- Open deals only (the result is joined to mart.deal_context): no closed deal's tasks grouped.
  WHERE direction IN ('inbound', 'outbound') AND what_id IN (SELECT opportunity_id FROM mart.deal_context)
),
agg AS (
  SELECT opportunity_id,
    SUM(CASE WHEN direction = 'outbound' AND created_date >= {{as_of_end}} - INTERVAL '{{param:days}} days' THEN 1 ELSE 0 END) AS out_recent,
    MAX(CASE WHEN direction = 'inbound' THEN created_date END) AS last_inbound
  FROM t GROUP BY opportunity_id
)
SELECT c.opportunity_id, CAST(g.out_recent AS DOUBLE) AS value,
  CAST(g.out_recent AS VARCHAR) || ' emails or calls out in the last {{param:days}} days and no reply ' ||
  CASE WHEN g.last_inbound IS NULL THEN 'ever'
       ELSE 'since ' || CAST(CAST(g.last_inbound AS DATE) AS VARCHAR) || ' (' ||
            CAST(CAST(floor((date_part('epoch', {{as_of_end}}) - date_part('epoch', g.last_inbound)) / 86400) AS BIGINT) AS VARCHAR) || ' days)' END
  AS evidence
FROM mart.deal_context AS c JOIN agg AS g ON g.opportunity_id = c.opportunity_id
WHERE g.out_recent >= {{param:min_outreach}}
  AND (g.last_inbound IS NULL OR g.last_inbound < {{as_of_end}} - INTERVAL '{{param:days}} days')
