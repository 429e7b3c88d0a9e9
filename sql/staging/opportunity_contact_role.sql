-- Stakeholders on deals, as known on the run date.
SELECT id, opportunity_id, contact_id, role, is_primary, created_date, _version_exact
FROM known.opportunity_contact_role
