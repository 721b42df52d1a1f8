"""Run device code on the real MicroPython unix port.

The binary is $MICROPYTHON (the Makefile points it at the venv's pinned unix port;
set it to a custom firmware build to run the MFL wire tests). The device package is
found through MICROPYPATH=firmware, exactly as a board finds it in /lib or frozen.
"""

import json
import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
DEVICE_HELPERS = ROOT / "host_tests" / "device"


def micropython_binary():
    path = os.environ.get("MICROPYTHON")
    if path:
        return path
    venv = ROOT / ".venv" / "bin" / "micropython"
    if venv.exists():
        return str(venv)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("no MicroPython unix port: run `make setup` or set MICROPYTHON")
    return found


def frozen():
    """IOTHUB_FROZEN=1: test the package frozen into $MICROPYTHON instead of firmware/."""
    return os.environ.get("IOTHUB_FROZEN") == "1"


def mpy_env(extra_path=()):
    env = dict(os.environ)
    if frozen():
        paths = [".frozen", str(DEVICE_HELPERS)]
    else:
        paths = [str(p) for p in extra_path] + [str(FIRMWARE), str(DEVICE_HELPERS), ".frozen"]
    env["MICROPYPATH"] = ":".join(paths)
    return env


def run(code=None, script=None, args=(), heapsize=None, timeout=120, extra_path=(), check=False):
    """Run `code` (a string) or `script` (a path) on the unix port. Returns CompletedProcess."""
    cmd = [micropython_binary()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    if code is not None:
        cmd += ["-c", code]
    else:
        cmd += [str(script)]
    cmd += [str(a) for a in args]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=mpy_env(extra_path),
        cwd=str(ROOT),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            "micropython exited %d\nstdout:\n%s\nstderr:\n%s"
            % (proc.returncode, proc.stdout, proc.stderr)
        )
    return proc


def run_json(code, **kw):
    """Run code whose last stdout line is JSON; return it decoded."""
    proc = run(code, check=True, **kw)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1])


_TLSX_PROBE = """
try:
    import tlsx
except ImportError as e:
    print("NO-TLSX", e)
else:
    import json
    print(json.dumps({
        "default": tlsx.DEFAULT_MFL,
        "in": tlsx.IN_CONTENT_LEN,
        "out": tlsx.OUT_CONTENT_LEN,
        "set_mfl": hasattr(tlsx, "set_max_fragment_length"),
        "heap_stats": bool(getattr(tlsx, "HEAP_STATS", 0)),
    }))
"""
_tlsx_cache = []


def tlsx_caps():
    """What the binary's `tlsx` module reports ({default, in, out, set_mfl}), or None when the
    binary positively has no `tlsx` (ImportError on import: stock MicroPython). Anything else
    (a crash, an error inside tlsx, output that is not the probe's) raises AssertionError with
    the output, so a broken firmware build fails instead of reading as "stock"."""
    if not _tlsx_cache:
        proc = run(_TLSX_PROBE, timeout=60)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode == 0 and lines and lines[-1].startswith("NO-TLSX"):
            _tlsx_cache.append(None)
        else:
            try:
                caps = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
            except ValueError:
                caps = None
            if not isinstance(caps, dict):
                raise AssertionError(
                    "probing tlsx on %s failed (exit %d)\nstdout:\n%s\nstderr:\n%s"
                    % (micropython_binary(), proc.returncode, proc.stdout, proc.stderr)
                )
            _tlsx_cache.append(caps)
    return _tlsx_cache[0]


def run_bench(script, out_dir, *args, timeout=180):
    """Run tools/bench/<script> on the unix port under test (--mp) with --json into out_dir;
    returns (stdout, the parsed JSON). Fails with the bench's output when it exits non-zero."""
    import sys

    out_json = pathlib.Path(out_dir) / (script + ".json")
    cmd = [sys.executable, str(ROOT / "tools" / "bench" / script)] + [str(a) for a in args]
    cmd += ["--mp", micropython_binary(), "--json", str(out_json)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out_json.read_text())
