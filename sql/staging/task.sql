-- Emails, calls and to-dos logged on or before the run date (created_date decides, not
-- activity_date: a call dated last week but logged tomorrow was not known today).
-- direction (inbound | outbound) and channel (email | call) are concepts: the lake profile's rules
-- (data/profiles/default.toml, or the lake's lake.toml) say how this lake records them; NULL when unknown.
SELECT id, what_id, who_id, account_id, owner_id, subject, type, task_subtype, call_type,
  {{concept:task.task_direction}} AS direction,
  {{concept:task.task_channel}} AS channel,
  status, activity_date, created_date, _version_exact
FROM known.task
