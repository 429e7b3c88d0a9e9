-- Meetings logged on or before the run date.
SELECT id, what_id, who_id, account_id, owner_id, subject, type, start_date_time,
  duration_in_minutes, created_date, _version_exact
FROM known.event
