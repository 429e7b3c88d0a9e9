-- Leads as they stood on the run date: status from the last 'Status' change in lead_history
-- created on or before then (else the lead's own status), and converted only if the conversion
-- happened on or before then.
WITH last_status AS (
  -- One ordered pass over the status changes (by lead, time, then id as the tie-break), a row kept
  -- where the lead differs from the row after (read from staging.lead_history, which the funnel
  -- reads too, so it is computed once); on a cluster, a hash aggregate per lead (see
  -- staging.opportunity's last change for why, and for how one branch is chosen).
  SELECT lead_id, status, status_changed_at FROM (
    SELECT h.lead_id, h.new_value AS status, h.created_date AS status_changed_at,
      LEAD(h.lead_id) OVER w IS DISTINCT FROM h.lead_id AS last_row
    FROM staging.lead_history AS h
    WHERE LOWER(h.field) = 'status' AND h.lead_id IS NOT NULL
    WINDOW w AS (ORDER BY h.lead_id, h.created_date, h.id)
  ) AS x
  WHERE last_row AND NOT {{cluster}}
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
