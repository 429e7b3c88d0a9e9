"""Executes every notebook in this folder (CI calls it); a failing cell fails the run."""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

here = pathlib.Path(__file__).parent
failed = False
for path in sorted(here.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
        print(f"notebook ok: {path.name}")
    except Exception as e:  # report every notebook, then fail
        failed = True
        print(f"notebook FAILED: {path.name}: {e}", file=sys.stderr)
sys.exit(1 if failed else 0)
