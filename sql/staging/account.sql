-- Accounts known as of the run date, one live row per id.
SELECT
  id,
  name,
  type,
  industry,
  number_of_employees,
  CASE
    WHEN number_of_employees IS NULL THEN NULL
    WHEN number_of_employees < 200 THEN 'SMB'
    WHEN number_of_employees < 2000 THEN 'Mid-Market'
    ELSE 'Enterprise'
  END AS size_band,
  annual_revenue,
  billing_country,
  billing_state,
  owner_id,
  parent_id,
  created_date,
  _version_exact
FROM known.account
