-- Sales activity known on the run date, one row per task or meeting, by the user who owns it.
-- direction and channel are the lake profile's concepts (staging.task).
-- A task counts on the day it was logged (created_date), which is when a manager could see it.
SELECT owner_id, CAST(created_date AS DATE) AS day, 'task' AS kind,
  lower(COALESCE(type, task_subtype, 'other')) AS type, direction, channel, what_id
FROM staging.task
UNION ALL
SELECT owner_id, CAST(created_date AS DATE), 'meeting', lower(COALESCE(type, 'meeting')), CAST(NULL AS VARCHAR), 'meeting', what_id
FROM staging.event
