#!/usr/bin/env python3
"""Digest of everything a lake's runs published, with run ids and clock times normalised.

A refactor that must not change behaviour is checked by running the same commands before and
after and diffing the two digests:

    python3 .ci/output_digest.py lakes/demo [--raw-bytes] > before.txt   # change the code, re-run
    python3 .ci/output_digest.py lakes/demo > after.txt && diff before.txt after.txt

Published Parquet tables are compared by content (schema and every row, in file order); text
artifacts and manifests by their text after normalisation (manifests without the clock, timings
and input fingerprints, which hash file modification times); raw/ Parquet by content with rows in
sorted order (an import writes rows in DataFusion's partition order, which can vary between runs;
the generator's files are byte-identical, see --raw-bytes). Needs pyarrow.
"""
import hashlib
import json
import os
import re
import sys

import pyarrow.parquet as pq

RUN_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[a-z_]+-[0-9a-z-]+?-p\d+")
CLOCK = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# The manifest fields that are the clock or the machine, not the run's result.
VOLATILE = {"run_id", "started_at", "committed_at", "timings_ms"}


def norm(text):
    return CLOCK.sub("<clock>", RUN_ID.sub("<run>", text))


def digest_parquet(path, sort_rows=False):
    table = pq.read_table(path)
    h = hashlib.sha256(str(table.schema).encode())
    rows = [norm(json.dumps(row, sort_keys=True, default=str)) for row in table.to_pylist()]
    for row in sorted(rows) if sort_rows else rows:
        h.update(row.encode())
    return f"rows={table.num_rows} {h.hexdigest()[:16]}"


def digest_manifest(path):
    with open(path) as f:
        m = json.load(f)
    for k in VOLATILE:
        m.pop(k, None)
    for i in m.get("inputs", []):
        i.pop("fingerprint", None)
    return hashlib.sha256(norm(json.dumps(m, sort_keys=True)).encode()).hexdigest()[:16]


def main(lake, raw_bytes):
    lines = []
    for top in ("raw", "output", "log"):
        for root, _, files in os.walk(os.path.join(lake, top)):
            for name in files:
                path = os.path.join(root, name)
                rel = norm(os.path.relpath(path, lake))
                if top == "raw" and (raw_bytes or not name.endswith(".parquet")):
                    with open(path, "rb") as f:
                        d = hashlib.sha256(f.read()).hexdigest()[:16]
                elif top == "raw":
                    d = digest_parquet(path, sort_rows=True)
                elif name.endswith(".parquet"):
                    d = digest_parquet(path)
                elif "/_runs/" in path and name.endswith(".json"):
                    d = digest_manifest(path)
                else:
                    with open(path, "rb") as f:
                        d = hashlib.sha256(norm(f.read().decode("utf-8", "replace")).encode()).hexdigest()[:16]
                lines.append(f"{rel}\t{d}")
    # Two runs of one job on one date share a normalised path: keep each digest, sorted.
    for line in sorted(lines):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1], "--raw-bytes" in sys.argv[2:])
