"""Deploy the iothub package, the example and its configuration to a board with mpremote.

    .venv/bin/python tools/iothub_tool/deploy.py --port /dev/ttyACM0          # make deploy PORT=...
    .venv/bin/python tools/iothub_tool/deploy.py --port /dev/ttyACM0 --dry-run

Steps: check boards/examples/config.py (made from config_template.py; refused when missing or
unfilled), ask the board for its .mpy version and architecture, cross-compile firmware/iothub
with mpy-cross for them (build/deploy/<platform>/), replace :lib/iothub on the board, copy
config.py and the example's main.py to the board's root. On iothub firmware the package is
frozen in and frozen modules come first on sys.path, so the copy is skipped there unless
--force-lib (and then it is shadowed anyway: a warning says so).
"""

import argparse
import ast
import json
import os
import pathlib
import shutil
import subprocess
import sys

try:
    from . import mpy
except ImportError:  # run as a script: tools/iothub_tool/deploy.py
    import mpy

ROOT = mpy.ROOT
EXAMPLES = ROOT / "boards" / "examples"
CONFIG = EXAMPLES / "config.py"
TEMPLATE = EXAMPLES / "config_template.py"
MAIN = EXAMPLES / "main.py"
BUILD = ROOT / "build" / "deploy"
SECRETS = ("WIFI_PASSWORD", "CONNECTION_STRING", "DPS_SYMMETRIC_KEY")

# Runs on the board: what it runs and whether iothub is frozen into its firmware.
PROBE = """\
import sys, json
m = sys.implementation._mpy
frozen = False
if '.frozen' in sys.path:
    saved = sys.path[:]
    sys.path[:] = ['.frozen']
    try:
        import iothub
        frozen = True
    except ImportError:
        pass
    sys.path[:] = saved
    sys.modules.pop('iothub', None)
print('IOTHUB-BOARD ' + json.dumps({'mpy': m, 'platform': sys.platform, 'frozen': frozen}))
"""

# Runs on the board: remove an old copy of the package (stale .py files would shadow .mpy).
CLEAN = """\
import os
def rm(p):
    try:
        if os.stat(p)[0] & 0x4000:
            for n in os.listdir(p):
                rm(p + '/' + n)
            os.rmdir(p)
        else:
            os.remove(p)
    except OSError:
        pass
rm('lib/iothub')
for d in %r:
    try:
        os.mkdir(d)
    except OSError:
        pass
"""


class DeployError(Exception):
    """A deploy step cannot go on; the message says what to do."""


def check_config(path=CONFIG, template=TEMPLATE):
    """Validate config.py without running it. Returns the names it sets. Never puts a value
    of a secret setting into an error message."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DeployError(
            "%s is missing: copy %s to it and fill in Wi-Fi and the connection string "
            "(or DPS settings); it is git-ignored" % (_rel(path), _rel(template))
        )
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SyntaxError as e:
        raise DeployError("%s is not valid Python (line %s)" % (_rel(path), e.lineno)) from None
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    values[target.id] = ...  # an expression: set, value unknown here
    wanted = [n for n in _names(template) if n not in values]
    if wanted:
        raise DeployError("%s lacks %s (see %s)" % (_rel(path), ", ".join(wanted), _rel(template)))
    problems = []
    if not values.get("CONNECTION_STRING") and not values.get("DPS_ID_SCOPE"):
        problems.append("set CONNECTION_STRING or the DPS_* settings")
    if values.get("TLS_PROFILE") not in ("rsa", "ecc", ...):
        problems.append("TLS_PROFILE must be 'rsa' or 'ecc'")
    if not values.get("WIFI_SSID"):
        problems.append("WIFI_SSID is empty (a board needs Wi-Fi)")
    if problems:
        raise DeployError("%s: %s" % (_rel(path), "; ".join(problems)))
    return sorted(values)


def _names(template):
    tree = ast.parse(pathlib.Path(template).read_text())
    return [
        n.targets[0].id
        for n in tree.body
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
    ]


def _rel(p):
    p = pathlib.Path(p)
    try:
        return p.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def decode_mpy(value):
    """sys.implementation._mpy -> ('6.3', 'xtensawin' or None). Layout from MicroPython's
    py/persistentcode.h: version | (sub_version | arch << 2) << 8."""
    version = value & 0xFF
    feature = value >> 8
    arch_index = (feature >> 2) & 0x2F
    arch = mpy.ARCHS[arch_index] if arch_index < len(mpy.ARCHS) else None
    return "%d.%d" % (version, feature & 3), arch


def find_mpremote(explicit=None):
    for c in (
        explicit,
        os.environ.get("MPREMOTE"),
        str(pathlib.Path(sys.executable).parent / "mpremote"),
        shutil.which("mpremote"),
    ):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise DeployError("mpremote not found: run `make setup` (PyPI mpremote) or pass --mpremote")


def run_mpremote(tool, port, args, timeout=120):
    cmd = [tool, "connect", port] + list(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError("mpremote did not finish within %d s (%s)" % (timeout, args[0])) from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        if _no_board(port, msg):
            raise DeployError(
                "no board found at %s: plug it in, or find its port with "
                "`.venv/bin/mpremote connect list` and pass PORT=... (mpremote said: %s)"
                % (port, msg.replace("mpremote: ", ""))
            )
        raise DeployError("mpremote %s failed on %s: %s" % (args[0], port, msg))
    return proc.stdout


def _no_board(port, msg):
    """mpremote could not open the port: it does not exist, or nothing answers there."""
    if port.startswith("/") and not os.path.exists(port):
        return True
    return "failed to access" in msg or "no device found" in msg


def board_info(tool, port):
    out = run_mpremote(tool, port, ["exec", PROBE])
    for line in out.splitlines():
        if line.startswith("IOTHUB-BOARD "):
            info = json.loads(line[len("IOTHUB-BOARD ") :])
            info["version"], info["arch"] = decode_mpy(info["mpy"])
            return info
    raise DeployError("the board on %s did not answer the probe: %r" % (port, out[-200:]))


def plan(compiled, info, *, include_lib, config=CONFIG, main=MAIN, build=BUILD):
    """The mpremote argument lists, in order, for one deploy. `compiled` are paths under
    <build>/<platform>/ (default build/deploy/) as written by mpy.compile_package()."""
    base = pathlib.Path(build) / info["platform"]
    steps = []
    if include_lib:
        dirs = {"lib", "lib/iothub"}
        copies = []
        for p in sorted(compiled):
            rel = pathlib.Path(p).relative_to(base).as_posix()
            parent = rel.rsplit("/", 1)[0]
            while parent:
                dirs.add("lib/" + parent)
                parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
            copies.append((str(p), ":lib/" + rel))
        steps.append(["exec", CLEAN % (sorted(dirs, key=len),)])
        for i in range(0, len(copies), 8):  # a few files per mpremote invocation
            cmd = []
            for local, remote in copies[i : i + 8]:
                cmd += (["+"] if cmd else []) + ["fs", "cp", local, remote]
            steps.append(cmd)
    steps.append(["fs", "cp", str(config), ":config.py"])
    if main is not None:
        steps.append(["fs", "cp", str(main), ":main.py"])
    return steps


def assumed_info(platform):
    """Board facts for --assume (dry runs without a board): this mpy-cross's .mpy version."""
    return {
        "platform": platform,
        "version": mpy.emitted_version(mpy.find_mpy_cross()),
        "arch": mpy.MARCH_BY_PLATFORM.get(platform),
        "frozen": False,
    }


def deploy(
    port,
    *,
    tool=None,
    dry_run=False,
    with_main=True,
    force_lib=False,
    info=None,
    config=CONFIG,
    build=BUILD,
    opt=mpy.OPT,
):
    check_config(config)
    if tool is None and not (dry_run and info):
        tool = find_mpremote()
    if info is None:
        info = board_info(tool, port)
    march = mpy.MARCH_BY_PLATFORM.get(info["platform"], info.get("arch"))
    out = pathlib.Path(build) / info["platform"]
    if out.exists():
        shutil.rmtree(out)
    compiled = mpy.compile_package(out, march=march, bytecode=info["version"], opt=opt)
    include_lib = force_lib or not info.get("frozen")
    notes = []
    if info.get("frozen"):
        notes.append(
            "iothub is frozen into this firmware (frozen modules come first on sys.path): "
            + ("copying lib/iothub anyway; it stays shadowed" if force_lib else "not copying it")
        )
    steps = plan(
        compiled,
        info,
        include_lib=include_lib,
        config=config,
        main=MAIN if with_main else None,
        build=build,
    )
    for args in steps:
        if dry_run:
            print("mpremote connect %s %s" % (port, " ".join(_show(a) for a in args)))
        else:
            run_mpremote(tool, port, args)
    return {"info": info, "steps": steps, "compiled": compiled, "notes": notes}


def _show(arg):
    return "<script>" if "\n" in arg else arg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--port", required=True, help="serial port, e.g. /dev/ttyACM0 (Pico W), /dev/ttyUSB0"
    )
    ap.add_argument("--mpremote", default=None, help="mpremote binary (default: the venv's)")
    ap.add_argument("--no-main", action="store_true", help="do not copy the example's main.py")
    ap.add_argument(
        "--force-lib", action="store_true", help="copy lib/iothub even on iothub firmware"
    )
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    ap.add_argument(
        "--assume",
        choices=sorted(mpy.MARCH_BY_PLATFORM),
        help="with --dry-run: do not ask a board, assume this port",
    )
    ap.add_argument("--config", default=str(CONFIG), help="config file (default: %(default)s)")
    ap.add_argument(
        "--build",
        default=str(BUILD),
        help="where the .mpy files are compiled (default: %(default)s)",
    )
    ap.add_argument(
        "--opt",
        type=int,
        default=mpy.OPT,
        help="mpy-cross -O level (default %(default)s: no line numbers in tracebacks; 0 keeps them)",
    )
    args = ap.parse_args(argv)
    if args.assume and not args.dry_run:
        ap.error("--assume only goes with --dry-run")
    try:
        info = assumed_info(args.assume) if args.assume else None
        tool = None if info else find_mpremote(args.mpremote)
        result = deploy(
            args.port,
            tool=tool,
            dry_run=args.dry_run,
            with_main=not args.no_main,
            force_lib=args.force_lib,
            info=info,
            config=pathlib.Path(args.config),
            build=pathlib.Path(args.build),
            opt=args.opt,
        )
    except (DeployError, mpy.MpyError) as e:
        print("deploy: %s" % e, file=sys.stderr)
        return 1
    info = result["info"]
    for note in result["notes"]:
        print("note: " + note)
    print(
        "%s %s (%s, .mpy %s%s): %d package files, config.py%s"
        % (
            "dry run, nothing copied: would deploy to" if args.dry_run else "deployed to",
            args.port,
            info["platform"],
            info["version"],
            ", " + info["arch"] if info.get("arch") else "",
            len(result["compiled"]) if any(s[0] == "exec" for s in result["steps"]) else 0,
            ", main.py" if not args.no_main else "",
        )
    )
    if not args.dry_run:
        print("next: make repl PORT=%s, then Ctrl-D to soft-reset and run main.py" % args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
