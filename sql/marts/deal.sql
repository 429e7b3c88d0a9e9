-- One row per deal as it stood on the run date (staging.opportunity), with what the KPIs ask of
-- it: the source class of its pipeline and its deal type (the lake profile's concepts), how many stakeholders it has, whether it had a discovery
-- meeting and a demo, and its cycle length. Amounts are summed as landed: validate flags deals in
-- another currency (mixed_currency), and no FX rate table is in the contract yet.
WITH deal_contacts AS (
  -- Per deal and contact first: a grouped COUNT(DISTINCT) keeps a hash set per group (over 24 GB
  -- on a million deals); two hash aggregates count the same contacts in a fraction of it.
  SELECT opportunity_id, contact_id,
    MAX(CASE WHEN stakeholder_role = 'economic_buyer' THEN 1 ELSE 0 END) AS has_economic_buyer
  FROM staging.opportunity_contact_role
  GROUP BY opportunity_id, contact_id
),
roles AS (
  SELECT opportunity_id,
    COUNT(contact_id) AS contacts,
    MAX(has_economic_buyer) AS has_economic_buyer
  FROM deal_contacts
  GROUP BY opportunity_id
),
meetings AS (
  SELECT what_id AS opportunity_id,
    MAX(CASE WHEN meeting_kind = 'discovery' THEN 1 ELSE 0 END) AS had_discovery,
    MAX(CASE WHEN meeting_kind = 'demo' THEN 1 ELSE 0 END) AS had_demo
  FROM staging.event
  GROUP BY what_id
)
SELECT
  o.id,
  o.owner_id,
  o.account_id,
  o.type,
  o.stage_name,
  o.forecast_category,
  o.amount,
  o.is_closed,
  o.is_won,
  CAST(o.created_date AS DATE) AS created_day,
  o.close_date,
  -- Days from creation to close; NULL (not negative, not zero) when the close date is before the
  -- creation date: validate reports those as closed_before_created.
  CASE WHEN o.is_closed AND o.close_date >= CAST(o.created_date AS DATE)
       THEN CAST(date_part('day', CAST(o.close_date AS TIMESTAMP(6)) - date_trunc('day', o.created_date)) AS DOUBLE) END AS cycle_days,
  o.lead_source,
  COALESCE(o.source_class, '(unknown)') AS source_class,
  o.deal_type,
  COALESCE(r.contacts, 0) AS contacts,
  COALESCE(r.has_economic_buyer, 0) = 1 AS has_economic_buyer,
  COALESCE(m.had_discovery, 0) = 1 AS had_discovery,
  COALESCE(m.had_demo, 0) = 1 AS had_demo,
  -- The account's segment, for the regional leader's view.
  CASE WHEN a.number_of_employees IS NULL THEN NULL WHEN a.number_of_employees < 200 THEN 'SMB'
       WHEN a.number_of_employees < 2000 THEN 'Mid-Market' ELSE 'Enterprise' END AS size_band,
  a.industry
FROM staging.opportunity AS o
LEFT JOIN staging.account AS a ON a.id = o.account_id
LEFT JOIN roles AS r ON r.opportunity_id = o.id
LEFT JOIN meetings AS m ON m.opportunity_id = o.id
