-- CRM users (sellers, managers, leaders) known as of the run date.
SELECT id, name, email, title, manager_id, user_role_id, is_active, created_date, _version_exact
FROM known.user
