"""The sales-led funnel of jobs/funnels.toml in DuckDB SQL, on the same Parquet files, as of a date.

Used by `gtm-loop bench --duckdb` as the reference engine: prints one JSON line with wall time,
peak memory and every cell the funnel job publishes in funnel_steps and funnel_breakdown (overall
and by channel, geography, segment, size band and owner team: entities entering each step, and the
median and 90th percentile of days to the next step), which the bench checks against gtm-loop's.
Usage: python3 bench/funnel_duckdb.py LAKE_DIR AS_OF_DATE
"""
import json
import sys
import time

import duckdb

from asof import connect, known

lake, as_of = sys.argv[1], sys.argv[2]
end = f"(DATE '{as_of}' + INTERVAL 1 DAY)"
con = connect()
started = time.time()
# Same rules as sql/staging (bench/asof.py): rows known before the end of the as-of day, the
# winning version per id, known deletes dropped; conversions only once they happened; ordered
# steps within their windows.
DIMS = ["channel", "geography", "segment", "size_band", "owner_team"]
sql = f"""
WITH lead AS {known(con, lake, 'lead', end)},
lh AS {known(con, lake, 'lead_history', end)},
live_opp AS {known(con, lake, 'opportunity', end)},
stage AS {known(con, lake, 'opportunity_stage', end)},
history AS {known(con, lake, 'opportunity_history', end)},
users AS {known(con, lake, 'user', end)},
roles AS {known(con, lake, 'user_role', end)},
s0 AS (SELECT id AS entity_id, min(created_date) AS t FROM lead GROUP BY 1),
s1 AS (SELECT lead_id AS entity_id, min(created_date) AS t FROM lh WHERE lower(field) = 'status' AND new_value IN ('MQL', 'SQL', 'Converted') GROUP BY 1),
s2 AS (SELECT lead_id AS entity_id, min(created_date) AS t FROM lh WHERE lower(field) = 'status' AND new_value IN ('SQL', 'Converted') GROUP BY 1),
conv AS (SELECT id, CASE WHEN converted_date < {end} THEN converted_opportunity_id END AS opp_id FROM lead),
s3 AS (SELECT c.id AS entity_id, min(o.created_date) AS t FROM conv c JOIN live_opp o ON o.id = c.opp_id GROUP BY 1),
won AS (SELECT h.opportunity_id, min(h.created_date) AS won_at FROM history h
        JOIN stage s ON s.master_label = h.stage_name WHERE s.is_won GROUP BY 1),
s4 AS (SELECT c.id AS entity_id, min(w.won_at) AS t FROM conv c JOIN won w ON w.opportunity_id = c.opp_id GROUP BY 1),
w AS (
  SELECT l.id, l.lead_source AS channel, l.country AS geography, l.industry AS segment,
    CASE WHEN l.number_of_employees IS NULL THEN NULL WHEN l.number_of_employees < 200 THEN 'SMB'
         WHEN l.number_of_employees < 2000 THEN 'Mid-Market' ELSE 'Enterprise' END AS size_band,
    r.name AS owner_team,
    s0.t AS t0, s1.t AS r1, s2.t AS r2, s3.t AS r3, s4.t AS r4
  FROM lead l LEFT JOIN users u ON u.id = l.owner_id LEFT JOIN roles r ON r.id = u.user_role_id
  LEFT JOIN s0 ON s0.entity_id = l.id LEFT JOIN s1 ON s1.entity_id = l.id LEFT JOIN s2 ON s2.entity_id = l.id
  LEFT JOIN s3 ON s3.entity_id = l.id LEFT JOIN s4 ON s4.entity_id = l.id
),
w1 AS (SELECT *, CASE WHEN r1 >= t0 AND r1 < t0 + INTERVAL 120 DAY THEN r1 END AS t1 FROM w),
w2 AS (SELECT *, CASE WHEN t1 IS NOT NULL AND r2 >= t1 AND r2 < t1 + INTERVAL 120 DAY THEN r2 END AS t2 FROM w1),
w3 AS (SELECT *, CASE WHEN t2 IS NOT NULL AND r3 >= t2 AND r3 < t2 + INTERVAL 120 DAY THEN r3 END AS t3 FROM w2),
w4 AS (SELECT *, CASE WHEN t3 IS NOT NULL AND r4 >= t3 AND r4 < t3 + INTERVAL 365 DAY THEN r4 END AS t4 FROM w3),
x AS (SELECT *, {', '.join(f"(epoch(t{k + 1}) - epoch(t{k})) / 86400 AS d{k}" for k in range(4))} FROM w4)
SELECT {', '.join(f"GROUPING({d}) AS g_{d}" for d in DIMS)}, {', '.join(DIMS)},
  {', '.join(f"count(t{k})" for k in range(5))},
  {', '.join(f"quantile_cont(d{k}, 0.5), quantile_cont(d{k}, 0.9)" for k in range(4))}
FROM x GROUP BY GROUPING SETS ((), {', '.join(f"({d})" for d in DIMS)})
"""
cells = []
for row in con.execute(sql).fetchall():
    grouped = [d for i, d in enumerate(DIMS) if row[i] == 0]
    if grouped:
        at = DIMS.index(grouped[0])
        dimension, value = grouped[0], row[len(DIMS) + at]
        value = "(unknown)" if value is None else str(value)
    else:
        dimension, value = "(all)", "(all)"
    counts = row[2 * len(DIMS):2 * len(DIMS) + 5]
    days = row[2 * len(DIMS) + 5:]
    for k in range(5):
        median, p90 = (days[2 * k], days[2 * k + 1]) if k < 4 else (None, None)
        cells.append([dimension, value, k + 1, counts[k], median, p90])
elapsed = time.time() - started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
with open("/proc/self/status") as status:
    peak_mib = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
overall = sorted((c for c in cells if c[0] == "(all)"), key=lambda c: c[2])
print(json.dumps({"engine": f"duckdb {duckdb.__version__}", "seconds": elapsed, "peak_rss_mib": peak_mib, "cpu_seconds": time.process_time(),
                  "entered": [c[3] for c in overall], "cells": cells}))
