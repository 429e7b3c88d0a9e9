-- Every open deal on the run date with what the risk flags and the next-best-action sentences
-- need: names (deal, account, owner, manager, champion, economic and technical buyer), stage and
-- how long it has sat there, age, activity, stakeholders. {{as_of_end}} is the end of the as-of day.
-- The stage before each history row is read in one ordered pass over the table, the row before
-- counting only when it is the same deal's: see "One ordered pass" in the README.
-- Only open deals are described, so every per-deal aggregate below reads only their rows (a semi
-- join on `open_deals` before the window and the aggregates): on a million deals a tenth are open.
WITH open_deals AS (
  SELECT id FROM staging.opportunity WHERE is_closed = false
),
h AS (
  SELECT opportunity_id, created_date, stage_name,
    CASE WHEN LAG(opportunity_id) OVER w IS NOT DISTINCT FROM opportunity_id THEN LAG(stage_name) OVER w END AS previous_stage
  FROM staging.opportunity_history
  WHERE opportunity_id IN (SELECT id FROM open_deals)
  WINDOW w AS (ORDER BY opportunity_id, created_date, id)
),
entered AS (
  SELECT opportunity_id, MAX(created_date) AS stage_entered_at, COUNT(*) AS changes
  FROM h WHERE previous_stage IS NULL OR previous_stage <> stage_name GROUP BY opportunity_id
),
-- Stakeholders in two hash aggregates (per deal and contact, then per deal), not COUNT(DISTINCT):
-- DataFusion keeps a hash set per group for a grouped COUNT(DISTINCT), which took over 24 GB on
-- a million deals where this takes 1.1 GB.
deal_contacts AS (
  SELECT r.opportunity_id, r.contact_id,
    MIN(CASE WHEN r.stakeholder_role = 'champion' THEN COALESCE(c.name, trim(COALESCE(c.first_name, '') || ' ' || COALESCE(c.last_name, ''))) END) AS champion_name,
    MIN(CASE WHEN r.stakeholder_role = 'economic_buyer' THEN COALESCE(c.name, trim(COALESCE(c.first_name, '') || ' ' || COALESCE(c.last_name, ''))) END) AS economic_buyer_name,
    MIN(CASE WHEN r.stakeholder_role = 'technical_buyer' THEN COALESCE(c.name, trim(COALESCE(c.first_name, '') || ' ' || COALESCE(c.last_name, ''))) END) AS technical_buyer_name
  FROM staging.opportunity_contact_role AS r
  LEFT JOIN staging.contact AS c ON c.id = r.contact_id
  WHERE r.opportunity_id IN (SELECT id FROM open_deals)
  GROUP BY r.opportunity_id, r.contact_id
),
people AS (
  SELECT opportunity_id,
    MIN(champion_name) AS champion_name,
    MIN(economic_buyer_name) AS economic_buyer_name,
    MIN(technical_buyer_name) AS technical_buyer_name,
    COUNT(contact_id) AS contacts
  FROM deal_contacts
  GROUP BY opportunity_id
),
activity AS (
  SELECT what_id AS opportunity_id, COUNT(*) AS activities,
    MAX(CASE WHEN kind = 'inbound' THEN created_date END) AS last_inbound_at
  FROM (
    SELECT what_id, created_date, COALESCE(direction, 'task') AS kind FROM staging.task
    UNION ALL
    SELECT what_id, created_date, 'meeting' FROM staging.event
  ) AS a
  WHERE what_id IN (SELECT id FROM open_deals)
  GROUP BY what_id
)
SELECT
  o.id AS opportunity_id,
  COALESCE(o.name, o.id) AS deal_name,
  COALESCE(a.name, '(no account)') AS account_name,
  o.owner_id,
  COALESCE(u.name, o.owner_id) AS owner_name,
  u.manager_id,
  COALESCE(m.name, 'the sales manager') AS manager_name,
  o.stage_name,
  o.stage_order,
  o.amount,
  o.close_date,
  o.forecast_category,
  o.next_step,
  d.size_band,
  CAST(floor((date_part('epoch', {{as_of_end}}) - date_part('epoch', o.created_date)) / 86400) AS BIGINT) AS age_days,
  CAST(floor((date_part('epoch', {{as_of_end}}) - date_part('epoch', COALESCE(e.stage_entered_at, o.created_date))) / 86400) AS BIGINT) AS days_in_stage,
  COALESCE(e.changes, 0) AS stage_changes,
  COALESCE(p.contacts, 0) AS contacts,
  COALESCE(p.champion_name, 'the champion') AS champion_name,
  p.champion_name IS NOT NULL AS has_champion,
  COALESCE(p.economic_buyer_name, 'the economic buyer') AS economic_buyer_name,
  p.economic_buyer_name IS NOT NULL AS has_economic_buyer,
  COALESCE(p.technical_buyer_name, 'the technical buyer') AS technical_buyer_name,
  COALESCE(ac.activities, 0) AS activities,
  ac.last_inbound_at
FROM staging.opportunity AS o
LEFT JOIN mart.deal AS d ON d.id = o.id
LEFT JOIN staging.account AS a ON a.id = o.account_id
LEFT JOIN staging."user" AS u ON u.id = o.owner_id
LEFT JOIN staging."user" AS m ON m.id = u.manager_id
LEFT JOIN entered AS e ON e.opportunity_id = o.id
LEFT JOIN people AS p ON p.opportunity_id = o.id
LEFT JOIN activity AS ac ON ac.opportunity_id = o.id
WHERE o.is_closed = false
