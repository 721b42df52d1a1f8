import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The pure core runs unchanged on CPython too: tests import it from firmware/.
for p in (ROOT / "firmware", ROOT / "tools", ROOT / "host_tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def pytest_terminal_summary(terminalreporter):
    """Print the figures the lifecycle tests measured (time to recover per fault...)."""
    mod = sys.modules.get("test_lifecycle")
    figures = getattr(mod, "RECOVERY", None)
    if not figures:
        return
    terminalreporter.section("lifecycle figures")
    for name, value in figures.items():
        if isinstance(value, float):
            value = "%.2f s" % value
        terminalreporter.write_line("%-70s %s" % (name, value))
