-- Technical incompatibility: security, integration or technical-blocker trackers on the deal's
-- calls ({{param:min_mentions}}+ in the last {{param:window_days}} days), or a technical buyer who
-- has gone silent (outreach to them in that time, no reply).
WITH t AS (
  SELECT opportunity_id, COUNT(*) AS mentions, string_agg(DISTINCT topic, ', ') AS kinds
  FROM staging.tracker_mention
  WHERE topic IN ('security', 'integration', 'technical_blocker')
    AND mentioned_at >= {{as_of_end}} - INTERVAL '{{param:window_days}} days'
  GROUP BY opportunity_id
),
tb AS (
  SELECT r.opportunity_id,
    SUM(CASE WHEN k.direction = 'outbound' THEN 1 ELSE 0 END) AS out_n,
    SUM(CASE WHEN k.direction = 'inbound' THEN 1 ELSE 0 END) AS in_n
  FROM staging.opportunity_contact_role AS r
  JOIN staging.task AS k ON k.what_id = r.opportunity_id AND k.who_id = r.contact_id
  WHERE r.stakeholder_role = 'technical_buyer' AND k.created_date >= {{as_of_end}} - INTERVAL '{{param:window_days}} days'
  GROUP BY r.opportunity_id
)
SELECT c.opportunity_id, CAST(COALESCE(t.mentions, 0) AS DOUBLE) AS value,
  concat_ws('; ',
    CASE WHEN COALESCE(t.mentions, 0) >= {{param:min_mentions}} THEN CAST(t.mentions AS VARCHAR) || ' ' || t.kinds || ' mention(s) on calls in the last {{param:window_days}} days' END,
    CASE WHEN COALESCE(tb.out_n, 0) >= {{param:min_outreach}} AND COALESCE(tb.in_n, 0) = 0
         THEN c.technical_buyer_name || ' (technical buyer) has not replied to ' || CAST(tb.out_n AS VARCHAR) || ' messages in {{param:window_days}} days' END
  ) AS evidence
FROM mart.deal_context AS c
LEFT JOIN t ON t.opportunity_id = c.opportunity_id
LEFT JOIN tb ON tb.opportunity_id = c.opportunity_id
WHERE COALESCE(t.mentions, 0) >= {{param:min_mentions}} OR (COALESCE(tb.out_n, 0) >= {{param:min_outreach}} AND COALESCE(tb.in_n, 0) = 0)
