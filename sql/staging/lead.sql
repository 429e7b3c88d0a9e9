-- Leads as they stood on the run date: status from the last 'Status' change in lead_history
-- created on or before then (else the lead's own status), and converted only if the conversion
-- happened on or before then.
WITH last_status AS (
  -- One hash aggregate over the status changes (read from staging.lead_history, which the funnel
  -- reads too, so it is computed once): last_by keeps each lead's last change by time, then id
  -- (the tie-break), nulls last (src/layers/last_by.rs). The time of that change is the latest
  -- time, or none where a change without a time comes last. It replaced one ordered pass (a sort
  -- of every status change on one core: 1.35 s of the million-deal funnel's critical path). On a
  -- cluster, whose executors do not know last_by, first_value per lead (see staging.opportunity's
  -- last change for why, and for how one branch is chosen).
  SELECT h.lead_id, last_by(h.new_value, h.created_date, h.id) AS status,
    CASE WHEN COUNT(*) > COUNT(h.created_date) THEN NULL ELSE MAX(h.created_date) END AS status_changed_at
  FROM staging.lead_history AS h
  WHERE LOWER(h.field) = 'status' AND h.lead_id IS NOT NULL AND NOT {{cluster}}
  GROUP BY h.lead_id
  UNION ALL
  SELECT h.lead_id,
    first_value(h.new_value ORDER BY h.created_date DESC, h.id DESC) AS status,
    first_value(h.created_date ORDER BY h.created_date DESC, h.id DESC) AS status_changed_at
  FROM known.lead_history AS h
  WHERE LOWER(h.field) = 'status' AND {{cluster}}
  GROUP BY h.lead_id
)
SELECT
  l.id,
  l.name,
  l.company,
  l.email,
  COALESCE(s.status, l.status) AS status,
  s.status_changed_at,
  l.lead_source,
  l.source_class,
  l.industry,
  l.country,
  l.number_of_employees,
  l.owner_id,
  COALESCE(l.is_converted AND l.converted_date < CAST({{as_of_end}} AS DATE), false) AS is_converted,
  CASE WHEN l.converted_date < CAST({{as_of_end}} AS DATE) THEN l.converted_date END AS converted_date,
  CASE WHEN l.converted_date < CAST({{as_of_end}} AS DATE) THEN l.converted_account_id END AS converted_account_id,
  CASE WHEN l.converted_date < CAST({{as_of_end}} AS DATE) THEN l.converted_contact_id END AS converted_contact_id,
  CASE WHEN l.converted_date < CAST({{as_of_end}} AS DATE) THEN l.converted_opportunity_id END AS converted_opportunity_id,
  l.created_date,
  l._version_exact
FROM (SELECT *, {{concept:lead.source_class}} AS source_class FROM known.lead) AS l
LEFT JOIN last_status AS s ON s.lead_id = l.id
