-- Campaign touches known as of the run date.
SELECT id, campaign_id, lead_id, contact_id, status, has_responded, created_date, _version_exact
FROM known.campaign_member
