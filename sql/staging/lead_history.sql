-- Lead field changes known as of the run date.
SELECT id, lead_id, field, old_value, new_value, created_date, _version_exact
FROM known.lead_history
