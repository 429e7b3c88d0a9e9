"""The as-of rules of sql/staging/_known_as_of.sql in DuckDB SQL, for the benchmark's reference side.

known(lake, table, ...) returns a SELECT of the rows of one raw table known as of a date: rows
known before the end of the as-of day, the winning CDC version per key (the same integer version
key as the engine: latest version synced before the end; else undated; else the earliest synced
after), and deleted rows dropped only when the delete was known. DuckDB does the de-duplication
with QUALIFY ROW_NUMBER() on every table, as a DuckDB user would write it.
"""
import duckdb

# The contract's keys and known-at columns (data/contract/lake.toml) for the tables the bench reads.
TABLES = {
    "account": (["id"], "created_date"),
    "contact": (["id"], "created_date"),
    "opportunity": (["id"], "created_date"),
    "opportunity_history": (["id"], "created_date"),
    "opportunity_stage": (["id"], None),
    "opportunity_contact_role": (["id"], "created_date"),
    "task": (["id"], "created_date"),
    "event": (["id"], "created_date"),
    "lead": (["id"], "created_date"),
    "lead_history": (["id"], "created_date"),
    "user": (["id"], "created_date"),
    "user_role": (["id"], None),
}


def raw(lake, table):
    return f"read_parquet('{lake}/raw/salesforce/{table}/**/*.parquet', union_by_name = true)"


def columns(con, lake, table):
    return {r[0].lower() for r in con.execute(f"DESCRIBE SELECT * FROM {raw(lake, table)}").fetchall()}


def known(con, lake, table, end):
    key, known_at = TABLES[table]
    cols = columns(con, lake, table)
    col = lambda c: c if c in cols else "NULL"
    at = f"COALESCE({col('_fivetran_start')}, {col('_fivetran_synced')})"
    exact = f"({at} IS NULL OR {at} < {end})"
    vkey = (f"CASE WHEN {at} IS NULL THEN -4611686018427387904 "
            f"WHEN {at} < {end} THEN epoch_ns({at}) "
            f"ELSE -4611686018427387905 - (epoch_ns({at}) - epoch_ns({end})) END")
    known_filter = f"CAST({known_at} AS TIMESTAMP) < {end}" if known_at and known_at in cols else "TRUE"
    deleted = f"(COALESCE({col('is_deleted')}, false) OR COALESCE({col('_fivetran_deleted')}, false))"
    last_mod = col("last_modified_date")
    return f"""(SELECT * EXCLUDE (_rank) FROM (
  SELECT *, {exact} AS _version_exact,
    ROW_NUMBER() OVER (PARTITION BY {', '.join(key)} ORDER BY {vkey} DESC) AS _rank
  FROM {raw(lake, table)} WHERE {known_filter}
) WHERE _rank = 1
  AND NOT ({deleted} AND (_version_exact OR {last_mod} IS NULL OR {last_mod} < {end})))"""


def connect():
    return duckdb.connect()
