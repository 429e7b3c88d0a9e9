-- How many trajectory rows each deal would have that carry a stage, counted without building the
-- trajectory: the win model draws its sample of deals from these counts before it builds any
-- deal's features (on a million deals it uses about 4% of the rows).
-- Reads the first steps of sql/learn/deal_trajectory.sql, run over the whole lake and registered
-- as mart._trajectory_hist, mart._trajectory_closes and mart._trajectory_landmarks.
-- A landmark has a stage when the latest history row recorded before it (by created_date, then
-- id: what the trajectory's `state` step reads) names one. Each history row is the latest for
-- the landmarks after it and up to the next row's instant; a row tied with the next one is the
-- latest for none.
-- Slot: {{end}} the first instant after the run date (the last weekly landmark).
WITH spans AS (
  SELECT opportunity_id, created_date AS from_at, stage_name,
    LEAD(created_date) OVER (PARTITION BY opportunity_id ORDER BY created_date, id) AS to_at
  FROM mart._trajectory_hist
),
staged AS (
  SELECT l.opportunity_id, l.snapshot, l.known_before
  FROM mart._trajectory_landmarks AS l
  JOIN spans AS s ON s.opportunity_id = l.opportunity_id AND s.from_at < l.known_before
    AND (s.to_at IS NULL OR s.to_at >= l.known_before)
  WHERE s.stage_name IS NOT NULL
)
SELECT st.opportunity_id,
  CAST(CAST(MAX(c.closed_at) AS TIMESTAMP(6)) AS BIGINT) AS closed_at_us,
  bool_or(c.won IS NOT NULL) AS decided,
  COUNT(*) AS staged_rows,
  SUM(CASE WHEN st.snapshot = 'week' THEN 1 ELSE 0 END) AS staged_week_rows,
  bool_or(st.snapshot = 'week' AND st.known_before = {{end}}) AS open_now
FROM staged AS st
LEFT JOIN mart._trajectory_closes AS c ON c.opportunity_id = st.opportunity_id
GROUP BY st.opportunity_id
