-- Meetings logged on or before the run date.
-- meeting_kind (discovery | demo) is the lake profile's reading of the type or subject.
SELECT id, what_id, who_id, account_id, owner_id, subject, type, {{concept:event.meeting_kind}} AS meeting_kind, start_date_time,
  duration_in_minutes, created_date, _version_exact
FROM known.event
