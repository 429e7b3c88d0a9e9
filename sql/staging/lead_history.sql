-- Lead field changes known as of the run date.
-- Not held in order (no @held-order line, unlike opportunity_history): staging.lead's last status,
-- the one per-lead pass over it, is a hash aggregate (last_by) that needs no order, and sorting the
-- whole table once when it is computed cost more than it saved (5M rows at 1M deals: 2.7 s held
-- sorted against 0.5 s).
SELECT id, lead_id, field, old_value, new_value, created_date, _version_exact
FROM known.lead_history
