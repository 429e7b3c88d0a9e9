-- Contacts known as of the run date. Duplicate people (same email, several ids) are kept and
-- reported by `validate`, not merged here: merging is a decision for the CRM owner.
SELECT id, account_id, first_name, last_name,
  COALESCE(name, TRIM(CONCAT(COALESCE(first_name, ''), ' ', COALESCE(last_name, '')))) AS name,
  email, LOWER(TRIM(email)) AS email_normalized, title, lead_source, owner_id, created_date, _version_exact
FROM known.contact
