-- Emails, calls and to-dos logged on or before the run date (created_date decides, not
-- activity_date: a call dated last week but logged tomorrow was not known today).
-- direction: the contract's field where present, else a call's call_type.
SELECT id, what_id, who_id, account_id, owner_id, subject, type, task_subtype, call_type,
  COALESCE(LOWER(direction), CASE LOWER(call_type) WHEN 'inbound' THEN 'inbound' WHEN 'outbound' THEN 'outbound' END) AS direction,
  status, activity_date, created_date, _version_exact
FROM known.task
