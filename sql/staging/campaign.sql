-- Campaigns created on or before the run date.
SELECT id, name, type, status, start_date, end_date, created_date, _version_exact
FROM known.campaign
