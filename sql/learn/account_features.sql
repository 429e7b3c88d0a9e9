-- Account attributes as of the run date, for the account-priority model: segment (industry and
-- size band), whether it has an open deal, and whether it has won before. Engagement and product
-- usage come from sql/learn/momentum.sql at the same date.
-- Industry is trimmed (landed values carry stray spaces); the model gives no coefficient to a
-- level held by fewer than 20 accounts (src/learn/account_priority.rs).
SELECT a.id AS account_id, a.name AS account_name, NULLIF(trim(a.industry), '') AS industry, a.size_band,
  CAST(COALESCE(o.open_deals, 0) AS BIGINT) AS open_deals,
  CAST(COALESCE(o.won_deals, 0) AS BIGINT) AS won_deals
FROM staging.account AS a
LEFT JOIN (
  SELECT account_id,
    SUM(CASE WHEN NOT COALESCE(is_closed, false) THEN 1 ELSE 0 END) AS open_deals,
    SUM(CASE WHEN COALESCE(is_won, false) THEN 1 ELSE 0 END) AS won_deals
  FROM staging.opportunity
  GROUP BY account_id
) AS o ON o.account_id = a.id
