-- Shared by every table: the version of each row that was known as of the run date.
-- The engine fills in the {{...}} slots from data/contract/lake.toml and the run's --as-of:
--   {{conformed}}    the landed table with contract columns and types (missing optional columns NULL)
--   {{key}}          the table's key;  {{known_filter}}  its known_at column before the as-of end
--   {{as_of_end}}    the first instant after the as-of date (far future without --as-of)
--   {{latest}}       one row per key: the version with the highest _version_key, found in one
--                    ordered pass (the versions sorted by key, then _version_key descending, a row
--                    kept where the key differs from the row before: no repartition, no per-key
--                    state); or, where the keys' hashes showed every key known only once
--                    (append-only history, a lake without CDC), the versions as they are
--   {{columns}}      the table's columns, in contract order
-- Rules (see ../../../shared/DESIGN.md, "As-of rules"):
--   1. a row exists only if it was known (created, measured, said) before the as-of end;
--   2. of its CDC versions (Fivetran history mode _fivetran_start, else _fivetran_synced) keep the
--      latest one before the as-of end; when the lake keeps only the current version and it was
--      synced later, keep that one and mark _version_exact = false (not time-travelled);
--   3. only then drop deleted rows, and only when the delete was known: a row deleted after the
--      as-of date (last_modified_date later) was still alive then.
-- Rule 2 as one integer, higher wins: a version synced before the as-of end ranks by its time (in
-- microseconds, the unit timestamps are read in); an undated version ranks below every dated one
-- known in time; a version synced only after the as-of end ranks below all of those, the earliest
-- such first.
WITH versions AS (
  SELECT
    c.*,
    COALESCE(c._fivetran_start, c._fivetran_synced) AS _version_at,
    COALESCE(c._fivetran_start, c._fivetran_synced) IS NULL
      OR COALESCE(c._fivetran_start, c._fivetran_synced) < {{as_of_end}} AS _version_exact,
    CASE
      WHEN COALESCE(c._fivetran_start, c._fivetran_synced) IS NULL THEN -4611686018427387904
      WHEN COALESCE(c._fivetran_start, c._fivetran_synced) < {{as_of_end}}
        THEN CAST(COALESCE(c._fivetran_start, c._fivetran_synced) AS BIGINT)
      ELSE -4611686018427387905
        - (CAST(COALESCE(c._fivetran_start, c._fivetran_synced) AS BIGINT) - CAST({{as_of_end}} AS BIGINT))
    END AS _version_key
  FROM {{conformed}} AS c
  WHERE {{known_filter}}
),
latest AS ({{latest}})
SELECT {{columns}}, _version_at, _version_exact
FROM latest
WHERE NOT (
  (COALESCE(is_deleted, false) OR COALESCE(_fivetran_deleted, false))
  AND (_version_exact OR last_modified_date IS NULL OR last_modified_date < {{as_of_end}})
)
