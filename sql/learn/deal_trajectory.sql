-- Deal trajectories: every deal at each entry into an open stage and at the end of every week it
-- was open, with what was observable then, and the outcome known by the run date.
-- One set-based pass over the as-of tables: landmarks joined by range to the history, contact
-- roles, meetings, tasks and tracker mentions recorded before each landmark.
-- Slots filled by the engine: {{weeks}} the week ends (a VALUES list of the first instant after
-- each weekly as-of day), {{as_of_end}} the end of the run date, {{deals:COLUMN}} the predicate
-- that keeps one slice of the deals (large lakes are built slice by slice to bound memory), and
-- the `wanted` slot of the landmarks step (see there).
-- No look-ahead: every feature reads only rows recorded before `known_before` (a stage entry's
-- own instant plus one second, or the first instant after the weekly as-of day). The outcome
-- columns (closed_at, won, next_push_at, closed_amount) are the only ones that look later, and
-- only the learning loop's evaluation reads them.
-- The file is a sequence of steps, each introduced by an `-- @step <table>` line: the engine runs
-- them in order for each slice and registers each result as that table before the next runs, so
-- the history window and the landmarks are computed once per slice rather than at every reference
-- (DataFusion inlines a CTE wherever it is named), and each feature family (state, pushes, roles,
-- meetings, tasks, mentions) is aggregated on its own before the last step joins them.
-- @step mart._trajectory_stage_meta
-- The stage catalog by master label.
SELECT master_label, MIN(sort_order) AS sort_order, bool_or(is_closed) AS is_closed, bool_or(is_won) AS is_won
FROM staging.opportunity_stage GROUP BY master_label
-- @step mart._trajectory_hist
-- Every stage-history row of the slice's deals, with the stage and close date before it and the
-- time of the deal's next row, NULL for its last (one ordered pass, the row before or after
-- counting only when it is the same deal's: see "One ordered pass" in the README).
SELECT h.opportunity_id, h.id, h.created_date, h.stage_name, h.amount, h.close_date, h.probability,
  CASE WHEN LAG(h.opportunity_id) OVER w IS NOT DISTINCT FROM h.opportunity_id THEN LAG(h.stage_name) OVER w END AS prev_stage,
  CASE WHEN LAG(h.opportunity_id) OVER w IS NOT DISTINCT FROM h.opportunity_id THEN LAG(h.close_date) OVER w END AS prev_close_date,
  CASE WHEN LEAD(h.opportunity_id) OVER w IS NOT DISTINCT FROM h.opportunity_id THEN LEAD(h.created_date) OVER w END AS next_at
FROM staging.opportunity_history AS h
WHERE h.created_date IS NOT NULL AND {{deals:h.opportunity_id}}
WINDOW w AS (ORDER BY h.opportunity_id, h.created_date, h.id)
-- @step mart._trajectory_closes
-- The first time each deal reached a closed stage, as known by the run date.
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist)
-- A deal's first closed row is the first row overall or one whose row before is another deal's.
SELECT opportunity_id, closed_at, won, closed_amount FROM (
    SELECT h.opportunity_id, h.created_date AS closed_at, s.is_won AS won, h.amount AS closed_amount,
      ROW_NUMBER() OVER w = 1 OR LAG(h.opportunity_id) OVER w IS DISTINCT FROM h.opportunity_id AS first_close
    FROM hist AS h JOIN stage_meta AS s ON s.master_label = h.stage_name
    WHERE s.is_closed
    WINDOW w AS (ORDER BY h.opportunity_id, h.created_date, h.id)
  ) AS c WHERE first_close
-- @step mart._trajectory_landmarks
-- Each deal at each entry into an open stage and at each week end while it was open. The
-- `wanted` slot below is empty (every landmark); or, for the win model, a join that keeps every
-- landmark of the deals it samples and only the current week of the open deals it scores; or, for
-- its counting pass (sql/learn/deal_landmark_counts.sql), a filter to the stage entries only.
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist),
closes AS (SELECT * FROM mart._trajectory_closes),
weeks AS (
  SELECT column1 AS week_end FROM (VALUES {{weeks}}) AS w
),
every_landmark AS (
SELECT h.opportunity_id, 'stage_entry' AS snapshot, h.created_date + INTERVAL '1 second' AS known_before
  FROM hist AS h
  JOIN stage_meta AS s ON s.master_label = h.stage_name
  LEFT JOIN closes AS c ON c.opportunity_id = h.opportunity_id
  WHERE (h.prev_stage IS NULL OR h.prev_stage <> h.stage_name) AND NOT s.is_closed
    AND (c.closed_at IS NULL OR h.created_date < c.closed_at)
  UNION ALL
  SELECT o.id, 'week', w.week_end
  FROM staging.opportunity AS o
  JOIN weeks AS w ON w.week_end > o.created_date
  LEFT JOIN closes AS c ON c.opportunity_id = o.id
  WHERE (c.closed_at IS NULL OR c.closed_at >= w.week_end) AND {{deals:o.id}}
)
SELECT l.opportunity_id, l.snapshot, l.known_before FROM every_landmark AS l
{{wanted}}
-- @step mart._trajectory_state
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist),
closes AS (SELECT * FROM mart._trajectory_closes),
landmarks AS (SELECT * FROM mart._trajectory_landmarks)
SELECT l.opportunity_id, l.known_before,
  last_value(h.stage_name ORDER BY h.created_date, h.id) AS stage_name,
  last_value(h.amount ORDER BY h.created_date, h.id) AS amount,
  last_value(h.close_date ORDER BY h.created_date, h.id) AS close_date,
  last_value(h.probability ORDER BY h.created_date, h.id) AS probability,
  MAX(CASE WHEN h.prev_stage IS NULL OR h.prev_stage <> h.stage_name THEN h.created_date END) AS stage_entered_at,
  SUM(CASE WHEN h.close_date > h.prev_close_date THEN 1 ELSE 0 END) AS close_pushes,
  MAX(h.amount) AS max_amount
FROM landmarks AS l
JOIN hist AS h ON h.opportunity_id = l.opportunity_id AND h.created_date < l.known_before
GROUP BY l.opportunity_id, l.known_before
-- @step mart._trajectory_pushes
-- Outcome side: the first close-date push after the landmark while the deal was still open.
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist),
closes AS (SELECT * FROM mart._trajectory_closes),
landmarks AS (SELECT * FROM mart._trajectory_landmarks)
SELECT l.opportunity_id, l.known_before, MIN(h.created_date) AS next_push_at
FROM landmarks AS l
JOIN hist AS h ON h.opportunity_id = l.opportunity_id AND h.created_date >= l.known_before
LEFT JOIN closes AS c ON c.opportunity_id = l.opportunity_id
WHERE h.close_date > h.prev_close_date AND (c.closed_at IS NULL OR h.created_date < c.closed_at)
GROUP BY l.opportunity_id, l.known_before
-- @step mart._trajectory_roles
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist),
closes AS (SELECT * FROM mart._trajectory_closes),
landmarks AS (SELECT * FROM mart._trajectory_landmarks)
-- Per landmark and contact first, then per landmark: a grouped COUNT(DISTINCT) keeps a hash set
-- per group (see sql/risk/deal_context.sql), two hash aggregates do not.
SELECT opportunity_id, known_before,
  COUNT(contact_id) AS contacts,
  MIN(champion_added_at) AS champion_added_at,
  MAX(economic_buyer) AS economic_buyer,
  MAX(technical_buyer) AS technical_buyer,
  MAX(last_thread_added_at) AS last_thread_added_at
FROM (
  SELECT l.opportunity_id, l.known_before, r.contact_id,
    MIN(CASE WHEN r.stakeholder_role = 'champion' THEN r.created_date END) AS champion_added_at,
    MAX(CASE WHEN r.stakeholder_role = 'economic_buyer' THEN 1 ELSE 0 END) AS economic_buyer,
    MAX(CASE WHEN r.stakeholder_role = 'technical_buyer' THEN 1 ELSE 0 END) AS technical_buyer,
    MAX(r.created_date) AS last_thread_added_at
  FROM landmarks AS l
  JOIN (SELECT * FROM staging.opportunity_contact_role WHERE {{deals:opportunity_id}}) AS r
    ON r.opportunity_id = l.opportunity_id AND (r.created_date IS NULL OR r.created_date < l.known_before)
  GROUP BY l.opportunity_id, l.known_before, r.contact_id
) AS per_contact
GROUP BY opportunity_id, known_before
-- @step mart._trajectory_meetings
-- Per landmark and title first, then per landmark: a grouped array_agg(DISTINCT ...) keeps a
-- hash set per group, two hash aggregates do not (at 100k deals this step took 6.4 s of the
-- trajectory's 20). The titles are sorted, so the same meetings give the same text. The contact
-- met is looked up once for the whole lake (sql/marts/meeting.sql), not once per slice.
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist),
closes AS (SELECT * FROM mart._trajectory_closes),
landmarks AS (SELECT * FROM mart._trajectory_landmarks)
SELECT opportunity_id, known_before, SUM(meetings) AS meetings, SUM(meetings_28d) AS meetings_28d,
  MAX(discovery_meeting) AS discovery_meeting,
  array_to_string(array_sort(array_agg(title)), '|') AS met_titles
FROM (
  SELECT l.opportunity_id, l.known_before, e.title, COUNT(*) AS meetings,
    SUM(CASE WHEN e.created_date >= l.known_before - INTERVAL '28 days' THEN 1 ELSE 0 END) AS meetings_28d,
    MAX(CASE WHEN e.meeting_kind = 'discovery' THEN 1 ELSE 0 END) AS discovery_meeting
  FROM landmarks AS l
  JOIN (SELECT * FROM mart.meeting WHERE {{deals:what_id}}) AS e ON e.what_id = l.opportunity_id AND e.created_date < l.known_before
  GROUP BY l.opportunity_id, l.known_before, e.title
) AS per_title
GROUP BY opportunity_id, known_before
-- @step mart._trajectory_tasks
-- Each task of the slice's deals once, with its direction as numbers and, when it was with a
-- contact who is (at some time) the deal's champion, when that contact became one: the champion
-- lookup is done once per task here, not once per task and landmark.
SELECT t.what_id AS opportunity_id, t.created_date,
  CASE WHEN t.direction = 'inbound' THEN 1 ELSE 0 END AS inbound,
  CASE WHEN t.direction = 'outbound' THEN 1 ELSE 0 END AS outbound,
  ch.contact_id IS NOT NULL AS with_champion,
  ch.since AS champion_since
FROM (SELECT * FROM staging.task WHERE {{deals:what_id}}) AS t
LEFT JOIN (
  SELECT opportunity_id, contact_id, MIN(created_date) AS since
  FROM staging.opportunity_contact_role WHERE stakeholder_role = 'champion' AND {{deals:opportunity_id}}
  GROUP BY opportunity_id, contact_id
) AS ch ON ch.opportunity_id = t.what_id AND ch.contact_id = t.who_id
WHERE t.created_date IS NOT NULL
-- @step mart._trajectory_task_counts
-- Tasks in the 28 days before each landmark and in the 28 before those; a task with a champion
-- counts as one only when the contact was the champion before the landmark.
WITH landmarks AS (SELECT * FROM mart._trajectory_landmarks),
tasks AS (
  SELECT l.opportunity_id, l.known_before, t.inbound, t.outbound,
    CASE WHEN t.with_champion AND (t.champion_since IS NULL OR t.champion_since < l.known_before) THEN 1 ELSE 0 END
      AS champion,
    CASE WHEN t.created_date >= l.known_before - INTERVAL '28 days' THEN 1 ELSE 0 END AS recent
  FROM landmarks AS l
  JOIN mart._trajectory_tasks AS t ON t.opportunity_id = l.opportunity_id AND t.created_date < l.known_before
    AND t.created_date >= l.known_before - INTERVAL '56 days'
)
SELECT opportunity_id, known_before,
  SUM(recent) AS tasks_28d,
  SUM(recent * inbound) AS inbound_28d,
  SUM(recent * outbound) AS outbound_28d,
  SUM((1 - recent) * inbound) AS inbound_prev_28d,
  SUM((1 - recent) * outbound) AS outbound_prev_28d,
  SUM(champion * recent * inbound) AS champion_in_28d,
  SUM(champion * recent * outbound) AS champion_out_28d,
  SUM(champion * (1 - recent) * inbound) AS champion_in_prev_28d,
  SUM(champion * (1 - recent) * outbound) AS champion_out_prev_28d
FROM tasks
GROUP BY opportunity_id, known_before
-- @step mart._trajectory_mentions
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist),
closes AS (SELECT * FROM mart._trajectory_closes),
landmarks AS (SELECT * FROM mart._trajectory_landmarks)
SELECT l.opportunity_id, l.known_before,
  SUM(CASE WHEN m.topic = 'competitor' THEN 1 ELSE 0 END) AS competitor_mentions,
  SUM(CASE WHEN m.topic IN ('pricing', 'discount') THEN 1 ELSE 0 END) AS pricing_mentions,
  SUM(CASE WHEN m.topic = 'security' THEN 1 ELSE 0 END) AS security_mentions,
  SUM(CASE WHEN m.topic IN ('integration', 'technical_blocker') THEN 1 ELSE 0 END) AS technical_mentions,
  SUM(CASE WHEN m.topic = 'legal' THEN 1 ELSE 0 END) AS legal_mentions
FROM landmarks AS l
JOIN (SELECT * FROM staging.tracker_mention WHERE {{deals:opportunity_id}}) AS m ON m.opportunity_id = l.opportunity_id AND m.mentioned_at < l.known_before
GROUP BY l.opportunity_id, l.known_before
-- @step trajectory
WITH stage_meta AS (SELECT * FROM mart._trajectory_stage_meta),
hist AS (SELECT * FROM mart._trajectory_hist),
closes AS (SELECT * FROM mart._trajectory_closes),
landmarks AS (SELECT * FROM mart._trajectory_landmarks),
state AS (SELECT * FROM mart._trajectory_state),
pushes AS (SELECT * FROM mart._trajectory_pushes),
roles AS (SELECT * FROM mart._trajectory_roles),
meetings AS (SELECT * FROM mart._trajectory_meetings),
task_counts AS (SELECT * FROM mart._trajectory_task_counts),
mentions AS (SELECT * FROM mart._trajectory_mentions)
SELECT
  l.opportunity_id,
  d.account_id,
  d.owner_id,
  l.snapshot,
  l.known_before,
  CAST(l.known_before - INTERVAL '1 second' AS DATE) AS snapshot_date,
  s.stage_name,
  sm.sort_order AS stage_order,
  CAST(date_part('epoch', l.known_before - s.stage_entered_at) AS DOUBLE) / 86400.0 AS days_in_stage,
  CAST(date_part('epoch', l.known_before - o.created_date) AS DOUBLE) / 86400.0 AS age_days,
  s.amount,
  s.max_amount,
  s.close_date,
  -- The CRM's own win probability (the stage's default, or the rep's), in percent.
  s.probability,
  CAST(COALESCE(s.close_pushes, 0) AS BIGINT) AS close_pushes,
  CAST(COALESCE(r.contacts, 0) AS BIGINT) AS contacts,
  r.champion_added_at IS NOT NULL AS has_champion,
  COALESCE(r.economic_buyer, 0) = 1 AS has_economic_buyer,
  COALESCE(r.technical_buyer, 0) = 1 AS has_technical_buyer,
  CAST(date_part('epoch', l.known_before - r.champion_added_at) AS DOUBLE) / 86400.0 AS champion_days,
  CAST(date_part('epoch', l.known_before - r.last_thread_added_at) AS DOUBLE) / 86400.0 AS days_since_thread_added,
  CAST(COALESCE(m.meetings, 0) AS BIGINT) AS meetings,
  CAST(COALESCE(m.meetings_28d, 0) AS BIGINT) AS meetings_28d,
  COALESCE(m.discovery_meeting, 0) = 1 AS had_discovery,
  COALESCE('|' || m.met_titles || '|', '') AS met_titles,
  CAST(COALESCE(t.tasks_28d, 0) AS BIGINT) AS tasks_28d,
  CAST(COALESCE(t.inbound_28d, 0) AS BIGINT) AS inbound_28d,
  CAST(COALESCE(t.outbound_28d, 0) AS BIGINT) AS outbound_28d,
  CAST(COALESCE(t.inbound_prev_28d, 0) AS BIGINT) AS inbound_prev_28d,
  CAST(COALESCE(t.outbound_prev_28d, 0) AS BIGINT) AS outbound_prev_28d,
  CAST(COALESCE(t.champion_in_28d, 0) AS BIGINT) AS champion_in_28d,
  CAST(COALESCE(t.champion_out_28d, 0) AS BIGINT) AS champion_out_28d,
  CAST(COALESCE(t.champion_in_prev_28d, 0) AS BIGINT) AS champion_in_prev_28d,
  CAST(COALESCE(t.champion_out_prev_28d, 0) AS BIGINT) AS champion_out_prev_28d,
  CAST(COALESCE(mn.competitor_mentions, 0) AS BIGINT) AS competitor_mentions,
  CAST(COALESCE(mn.pricing_mentions, 0) AS BIGINT) AS pricing_mentions,
  CAST(COALESCE(mn.security_mentions, 0) AS BIGINT) AS security_mentions,
  CAST(COALESCE(mn.technical_mentions, 0) AS BIGINT) AS technical_mentions,
  CAST(COALESCE(mn.legal_mentions, 0) AS BIGINT) AS legal_mentions,
  d.size_band,
  d.industry,
  d.source_class,
  d.deal_type,
  -- Outcomes, known by the run date: only the learning loop's evaluation reads these.
  c.closed_at,
  c.won,
  c.closed_amount,
  p.next_push_at
FROM landmarks AS l
JOIN (SELECT * FROM staging.opportunity WHERE {{deals:id}}) AS o ON o.id = l.opportunity_id
LEFT JOIN mart.deal AS d ON d.id = l.opportunity_id
LEFT JOIN state AS s ON s.opportunity_id = l.opportunity_id AND s.known_before = l.known_before
LEFT JOIN stage_meta AS sm ON sm.master_label = s.stage_name
LEFT JOIN roles AS r ON r.opportunity_id = l.opportunity_id AND r.known_before = l.known_before
LEFT JOIN meetings AS m ON m.opportunity_id = l.opportunity_id AND m.known_before = l.known_before
LEFT JOIN task_counts AS t ON t.opportunity_id = l.opportunity_id AND t.known_before = l.known_before
LEFT JOIN mentions AS mn ON mn.opportunity_id = l.opportunity_id AND mn.known_before = l.known_before
LEFT JOIN closes AS c ON c.opportunity_id = l.opportunity_id
LEFT JOIN pushes AS p ON p.opportunity_id = l.opportunity_id AND p.known_before = l.known_before
