-- The role hierarchy (company -> region -> team). Salesforce keeps no role history: current roles.
SELECT id, name, developer_name, parent_role_id, _version_exact
FROM known.user_role
