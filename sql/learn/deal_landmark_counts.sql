-- How many trajectory rows each deal would have that carry a stage, counted without building the
-- trajectory: the win model draws its sample of deals from these counts before it builds any
-- deal's features (on a million deals it uses about 4% of the rows).
-- Reads the first steps of sql/learn/deal_trajectory.sql, run over the whole lake and registered
-- as mart._trajectory_hist, mart._trajectory_closes and mart._trajectory_landmarks, the last with
-- its stage-entry landmarks only: the weekly ones are counted here, not listed (below).
-- A landmark has a stage when the latest history row recorded before it (by created_date, then
-- id: what the trajectory's `state` step reads) names one. Each history row is the latest for
-- the landmarks after it and up to the next row's instant, a span (from_at, to_at]; a row tied
-- with the next one is the latest for none.
-- Weekly landmarks: the week ends w = {{end}} - k weeks, 0 <= k <= {{last_week}}, at which the deal
-- was open (created before w, not closed before w). Those that carry a stage are the w in a staged
-- span that are also in (created, closed]: with a and b the bounds of that intersection, in
-- microseconds, a < w <= b holds for ceil((end - b) / week) <= k <= ceil((end - a) / week) - 1.
-- Counted per span this way, a million deals' 9.6M weekly landmarks are never built.
-- Slots: {{end}} the first instant after the run date (the last weekly landmark), {{last_week}}
-- the k of the first one.
-- (The history step carries each row's next instant, next_at, from the same ordered pass as the
-- row before: this query has no window of its own.)
WITH staged_spans AS (
  SELECT opportunity_id, created_date AS from_at, stage_name, next_at AS to_at
  FROM mart._trajectory_hist
  WHERE stage_name IS NOT NULL
),
entries AS (
  SELECT l.opportunity_id, COUNT(*) AS staged_rows
  FROM mart._trajectory_landmarks AS l
  JOIN staged_spans AS s ON s.opportunity_id = l.opportunity_id AND s.from_at < l.known_before
    AND (s.to_at IS NULL OR s.to_at >= l.known_before)
  GROUP BY l.opportunity_id
),
-- Each deal's life (created, closed) first, then its spans: the join of a million deals' spans
-- with their closes, built on the spans' side, took 2.7 s where this takes a fraction of that.
lives AS (
  SELECT o.id, CAST(CAST(o.created_date AS TIMESTAMP(6)) AS BIGINT) AS created_us,
    COALESCE(CAST(CAST(c.closed_at AS TIMESTAMP(6)) AS BIGINT), CAST({{end}} AS BIGINT)) AS closed_us
  FROM staging.opportunity AS o
  LEFT JOIN mart._trajectory_closes AS c ON c.opportunity_id = o.id
  WHERE o.created_date IS NOT NULL AND {{deals:o.id}}
),
bounds AS (
  SELECT s.opportunity_id,
    GREATEST(CAST(CAST(s.from_at AS TIMESTAMP(6)) AS BIGINT), d.created_us) AS a,
    LEAST(
      COALESCE(CAST(CAST(s.to_at AS TIMESTAMP(6)) AS BIGINT), CAST({{end}} AS BIGINT)),
      d.closed_us,
      CAST({{end}} AS BIGINT)
    ) AS b
  FROM lives AS d
  JOIN staged_spans AS s ON s.opportunity_id = d.id
),
weeks AS (
  SELECT opportunity_id, b,
    GREATEST(CAST(0 AS BIGINT),
      LEAST(CAST({{last_week}} AS BIGINT), (CAST({{end}} AS BIGINT) - a + 604800000000 - 1) / 604800000000 - 1)
      - (CAST({{end}} AS BIGINT) - b + 604800000000 - 1) / 604800000000 + 1) AS n
  FROM bounds
),
per_deal AS (
  SELECT opportunity_id, SUM(staged_rows) AS staged_rows, SUM(week_rows) AS staged_week_rows,
    bool_or(open_now) AS open_now
  FROM (
    SELECT opportunity_id, staged_rows, CAST(0 AS BIGINT) AS week_rows, false AS open_now FROM entries
    UNION ALL
    SELECT opportunity_id, SUM(n), SUM(n), bool_or(n > 0 AND b = CAST({{end}} AS BIGINT)) FROM weeks
    GROUP BY opportunity_id
  ) AS parts
  GROUP BY opportunity_id
)
SELECT d.opportunity_id,
  CAST(CAST(c.closed_at AS TIMESTAMP(6)) AS BIGINT) AS closed_at_us,
  c.won IS NOT NULL AS decided,
  d.staged_rows, d.staged_week_rows, d.open_now
FROM per_deal AS d
LEFT JOIN mart._trajectory_closes AS c ON c.opportunity_id = d.opportunity_id
WHERE d.staged_rows > 0
