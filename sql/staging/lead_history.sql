-- Lead field changes known as of the run date.
-- Held sorted by lead_id, then time and id: the ordered passes over it sort nothing.
-- @held-order: lead_id, created_date, id
SELECT id, lead_id, field, old_value, new_value, created_date, _version_exact
FROM known.lead_history
