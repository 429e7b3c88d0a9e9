-- Stakeholders on deals, as known on the run date.
-- stakeholder_role (champion | economic_buyer | technical_buyer) is the lake profile's reading of role.
SELECT id, opportunity_id, contact_id, role, {{concept:opportunity_contact_role.stakeholder_role}} AS stakeholder_role, is_primary, created_date, _version_exact
FROM known.opportunity_contact_role
