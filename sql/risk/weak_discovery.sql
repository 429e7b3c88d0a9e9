-- Weak point of view or discovery, on deals past stage order {{param:after_stage_order}}: no
-- economic buyer, single-threaded, no discovery meeting logged, or key fields missing (amount,
-- close date): poor data is itself a signal. Single-threading counts two points (one stakeholder
-- is the classic reason deals stall and slip), the others one; fires at {{param:min_points}} points.
-- A point whose data the lake does not hold (no contact roles, no stakeholder-role or meeting-kind
-- rule in the lake profile) is not scored: absence of evidence is not evidence of absence.
WITH s AS (
  SELECT c.opportunity_id, c.stage_name,
    CASE WHEN {{provides:stakeholder_role}} AND NOT c.has_economic_buyer THEN 1 ELSE 0 END AS no_eb,
    CASE WHEN {{landed:opportunity_contact_role.id}} AND c.contacts <= 1 THEN 1 ELSE 0 END AS single,
    CASE WHEN {{provides:meeting_kind}} AND NOT COALESCE(d.had_discovery, false) THEN 1 ELSE 0 END AS no_discovery,
    CASE WHEN c.amount IS NULL OR c.close_date IS NULL THEN 1 ELSE 0 END AS missing_fields,
    c.contacts
  FROM mart.deal_context AS c LEFT JOIN mart.deal AS d ON d.id = c.opportunity_id
  WHERE c.stage_order > {{param:after_stage_order}}
)
SELECT opportunity_id, CAST(no_eb + 2 * single + no_discovery + missing_fields AS DOUBLE) AS value,
  concat_ws('; ',
    CASE WHEN no_eb = 1 THEN 'no economic buyer named' END,
    CASE WHEN single = 1 THEN 'single-threaded (' || CAST(contacts AS VARCHAR) || ' contact)' END,
    CASE WHEN no_discovery = 1 THEN 'no discovery meeting logged' END,
    CASE WHEN missing_fields = 1 THEN 'amount or close date missing' END
  ) || ' in ' || stage_name AS evidence
FROM s WHERE no_eb + 2 * single + no_discovery + missing_fields >= {{param:min_points}}
