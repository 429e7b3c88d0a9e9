"""The staging step of the engine in DuckDB SQL, on the same Parquet files, as of a date.

Used by `gtm-loop bench --duckdb` as the reference engine. Computes what the engine's staging
unit computes: the known rows of every table in asof.TABLES (counted), and the open pipeline by
stage from staging.opportunity's rules (stage, amount and closed-ness from each deal's last history
row known then, through the stage catalog). Prints one JSON line: wall time, peak memory, counts.
Usage: python3 bench/staging_duckdb.py LAKE_DIR AS_OF_DATE
"""
import json
import sys
import time

from asof import TABLES, columns, connect, known

lake, as_of = sys.argv[1], sys.argv[2]
end = f"(DATE '{as_of}' + INTERVAL 1 DAY)"
started = time.time()
con = connect()
counts = {}
for table in TABLES:
    counts[table] = con.execute(f"SELECT COUNT(*) FROM {known(con, lake, table, end)}").fetchone()[0]
hcols = columns(con, lake, "opportunity_history")
pick = lambda c: f"CASE WHEN h.opportunity_id IS NULL THEN o.{c} ELSE h.{c} END" if c in hcols else f"o.{c}"
pipeline = con.execute(f"""
WITH o AS {known(con, lake, 'opportunity', end)},
h AS (SELECT * FROM {known(con, lake, 'opportunity_history', end)}
      QUALIFY ROW_NUMBER() OVER (PARTITION BY opportunity_id ORDER BY created_date DESC, id DESC) = 1),
s AS {known(con, lake, 'opportunity_stage', end)},
d AS (
  SELECT {pick('stage_name')} AS stage_name, {pick('amount')} AS amount,
    COALESCE(s.is_closed, CASE WHEN h.opportunity_id IS NULL OR h.stage_name = o.stage_name THEN o.is_closed END) AS is_closed
  FROM o LEFT JOIN h ON h.opportunity_id = o.id LEFT JOIN s ON s.master_label = {pick('stage_name')}
)
SELECT stage_name, COUNT(*), SUM(amount) FROM d WHERE NOT is_closed GROUP BY 1 ORDER BY 1
""").fetchall()
elapsed = time.time() - started
with open("/proc/self/status") as status:
    peak_mib = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
import duckdb
print(json.dumps({"engine": f"duckdb {duckdb.__version__}", "seconds": elapsed, "peak_rss_mib": peak_mib,
                  "cpu_seconds": time.process_time(), "counts": counts,
                  "pipeline": [[r[0], r[1], float(r[2]) if r[2] is not None else None] for r in pipeline]}))
