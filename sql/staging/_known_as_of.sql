-- Shared by every table: the version of each row that was known as of the run date.
-- The engine fills in the {{...}} slots from data/contract/lake.toml and the run's --as-of:
--   {{conformed}}    the landed table with contract columns and types (missing optional columns NULL)
--   {{key}}          the table's key;  {{known_filter}}  its known_at column before the as-of end
--   {{as_of_end}}    the first instant after the as-of date (far future without --as-of)
-- Rules (see ../../../shared/DESIGN.md, "As-of rules"):
--   1. a row exists only if it was known (created, measured, said) before the as-of end;
--   2. of its CDC versions (Fivetran history mode _fivetran_start, else _fivetran_synced) keep the
--      latest one before the as-of end; when the lake keeps only the current version and it was
--      synced later, keep that one and mark _version_exact = false (not time-travelled);
--   3. only then drop deleted rows, and only when the delete was known: a row deleted after the
--      as-of date (last_modified_date later) was still alive then.
SELECT *
FROM (
  SELECT
    c.*,
    COALESCE(c._fivetran_start, c._fivetran_synced) AS _version_at,
    COALESCE(c._fivetran_start, c._fivetran_synced) IS NULL
      OR COALESCE(c._fivetran_start, c._fivetran_synced) < {{as_of_end}} AS _version_exact,
    ROW_NUMBER() OVER (
      PARTITION BY {{key}}
      ORDER BY
        CASE WHEN COALESCE(c._fivetran_start, c._fivetran_synced) IS NULL
               OR COALESCE(c._fivetran_start, c._fivetran_synced) < {{as_of_end}} THEN 0 ELSE 1 END,
        CASE WHEN COALESCE(c._fivetran_start, c._fivetran_synced) < {{as_of_end}}
             THEN COALESCE(c._fivetran_start, c._fivetran_synced) END DESC NULLS LAST,
        COALESCE(c._fivetran_start, c._fivetran_synced) ASC NULLS LAST
    ) AS _version_rank
  FROM {{conformed}} AS c
  WHERE {{known_filter}}
) AS v
WHERE _version_rank = 1
  AND NOT (
    (COALESCE(is_deleted, false) OR COALESCE(_fivetran_deleted, false))
    AND (_version_exact OR last_modified_date IS NULL OR last_modified_date < {{as_of_end}})
  )
