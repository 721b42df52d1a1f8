import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The pure core runs unchanged on CPython too: tests import it from firmware/.
for p in (ROOT / "firmware", ROOT / "tools", ROOT / "host_tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The emulator's test PKI, generated once per run (no private key is committed)."""
    from iothub_emulator.pki import TestPKI

    return TestPKI.load_or_create(tmp_path_factory.getbasetemp() / "tls-state")


@pytest.fixture(scope="session")
def mpy_dir(tmp_path_factory):
    """The device package compiled to .mpy (as mip or `make deploy` install it), once per
    run; empty with IOTHUB_FROZEN=1, where the package frozen into $MICROPYTHON is used."""
    import subprocess

    import mpyrun

    out = tmp_path_factory.mktemp("mpy")
    if mpyrun.frozen():
        return out
    tool = mpyrun.ROOT / "tools" / "iothub_tool" / "mpy.py"
    subprocess.run([sys.executable, str(tool), "--out", str(out)], check=True, capture_output=True)
    assert (out / "iothub" / "client.mpy").exists()
    return out


CLIENT_KINDS = ("blocking", "aio")


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request):
    """Which client a device script drives through devkit.client(CFG): "blocking"
    (iothub.DeviceClient) or "aio" (iothub.aio.DeviceClient behind devkit's SyncAio facade,
    which runs its coroutines with asyncio.run while its background task keeps running).
    Put it in the script's CFG as CFG["client_kind"]; the test id shows it."""
    return request.param


@pytest.fixture
def endpoint(pki):
    """endpoint(profile="ecc", **kw): a started TLSEndpoint, stopped after the test."""
    from iothub_emulator.tlsserver import TLSEndpoint

    started = []

    def make(profile="ecc", **kw):
        ep = TLSEndpoint(pki, profile, **kw).start()
        started.append(ep)
        return ep

    yield make
    for ep in started:
        ep.stop()


def pytest_terminal_summary(terminalreporter):
    """Print what test_lifecycle.py's smallest-heap bisection found (its RECOVERY dict); the
    recovery times and soak figures come from tools/bench/bench_lifecycle.py."""
    mod = sys.modules.get("test_lifecycle")
    figures = getattr(mod, "RECOVERY", None)
    if not figures:
        return
    terminalreporter.section("lifecycle figures")
    for name, value in figures.items():
        if isinstance(value, float):
            value = "%.2f s" % value
        terminalreporter.write_line("%-70s %s" % (name, value))
