-- Sales activity known on the run date, one row per task or meeting, by the user who owns it.
-- A task counts on the day it was logged (created_date), which is when a manager could see it.
SELECT owner_id, CAST(created_date AS DATE) AS day, 'task' AS kind,
  lower(COALESCE(type, task_subtype, 'other')) AS type, lower(direction) AS direction, what_id
FROM staging.task
UNION ALL
SELECT owner_id, CAST(created_date AS DATE), 'meeting', lower(COALESCE(type, 'meeting')), CAST(NULL AS VARCHAR), what_id
FROM staging.event
