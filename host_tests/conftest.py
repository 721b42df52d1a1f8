import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The pure core runs unchanged on CPython too: tests import it from firmware/.
for p in (ROOT / "firmware", ROOT / "tools", ROOT / "host_tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
