"""Executes every notebook in this folder (CI calls it); a failing cell fails the run.

Each notebook gets a temporary directory of its own, removed afterwards, for its demo lake
(GTM_LOOP_LAKE, unless set) and its temporary files (TMPDIR): run from CI, the lakes and query
files the notebooks make are not left behind in /tmp."""
import os
import pathlib
import sys
import tempfile

import nbformat
from nbclient import NotebookClient

here = pathlib.Path(__file__).parent
failed = False
given_lake = os.environ.get("GTM_LOOP_LAKE")
for path in sorted(here.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix=f"gtm-notebook-{path.stem}-") as tmp:
        os.environ["TMPDIR"] = tmp
        os.environ["GTM_LOOP_LAKE"] = given_lake or os.path.join(tmp, "lake")
        try:
            NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
            print(f"notebook ok: {path.name}")
        except Exception as e:  # report every notebook, then fail
            failed = True
            print(f"notebook FAILED: {path.name}: {e}", file=sys.stderr)
sys.exit(1 if failed else 0)
