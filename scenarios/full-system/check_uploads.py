"""A team's own post-restore check: every upload can be read back. Exit 0 means healthy.

drproof runs it with the restored components' connection details in the environment;
this one needs only the uploads volume's directory, DRPROOF_UPLOADS_PATH.
"""

import os
import sys
from pathlib import Path

root = Path(os.environ["DRPROOF_UPLOADS_PATH"])
files = [p for p in root.rglob("*") if p.is_file()]
if not files:
    sys.exit(f"no uploads under {root}")
unreadable = []
for path in files:
    try:
        path.read_bytes()
    except OSError as exc:
        unreadable.append(f"{path}: {exc}")
if unreadable:
    sys.exit("unreadable uploads:\n" + "\n".join(unreadable))
print(f"{len(files)} uploads readable")
