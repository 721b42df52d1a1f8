"""The device package as firmware and mip see it, and the C module's contract, checked without a
MicroPython tree.

* Every file in firmware/iothub (found at run time, not a fixed list) compiles with mpy-cross
  for each board's architecture (ESP32: xtensawin, RP2040: armv6m) and for the host.
* package.json (mip) lists exactly the device package's files, nothing from tools/ or tests.
* tlsx build contracts (CI cannot build it): the struct it mirrors is the one the build checks
  (sslcontext_prefix.txt), both build files run that check and link with the wrap, and
  Python-visible names are unconditional (CMake ports' qstr scanner). What the wrap does is
  checked by calling the module where the binary under test has it.
"""

import json
import os
import pathlib
import re

import pytest

from iothub_tool import mpy

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "firmware" / "iothub"
TLSX = ROOT / "firmware" / "cmodules" / "tlsx"
BOARD_ARCHS = {"esp32": "xtensawin", "rp2": "armv6m", "host": None}


def device_files():
    return sorted(
        p.relative_to(PKG.parent).as_posix()
        for p in PKG.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".mpy")
    )


def test_package_has_modules():
    files = device_files()
    assert "iothub/__init__.py" in files
    assert mpy.package_files() == files


@pytest.mark.parametrize("board", sorted(BOARD_ARCHS))
def test_every_device_module_compiles_for_board(board, tmp_path):
    written = mpy.compile_package(tmp_path, march=BOARD_ARCHS[board])
    sources = device_files()
    assert len(written) == len(sources)
    for rel in sources:
        if rel.endswith(".py"):
            out = tmp_path / (rel[:-3] + ".mpy")
            head = out.read_bytes()[:2]
            assert head == b"M\x06", (rel, head)  # .mpy version 6 (MicroPython >= 1.19)
        else:
            assert (tmp_path / rel).read_bytes() == (PKG.parent / rel).read_bytes()


def test_compile_error_names_the_module(tmp_path):
    src = tmp_path / "src" / "iothub"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("x = 1\n")
    (src / "broken.py").write_text("def f(:\n")
    with pytest.raises(mpy.MpyError, match="iothub/broken.py"):
        mpy.compile_package(tmp_path / "out", src=src)


def _traceback_line(pkg_dir):
    # the line a traceback from a compiled module reports, on the real unix port
    import subprocess

    import mpyrun

    code = "import iothub.boom\ntry:\n    iothub.boom.f()\nexcept ValueError as e:\n"
    code += "    import sys\n    sys.print_exception(e)\n"
    proc = subprocess.run(
        [mpyrun.micropython_binary(), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, MICROPYPATH=str(pkg_dir)),
    )
    m = re.search(r'File "iothub.boom", line (\d+), in f', proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    return int(m.group(1))


def test_default_optimisation_drops_line_numbers_and_opt_0_keeps_them(tmp_path):
    # -O3 by default: the bytecode a loaded .mpy keeps in the GC heap has no line table
    # (smaller file); tracebacks still name the module and function. --opt 0 keeps lines.
    src = tmp_path / "src" / "iothub"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "boom.py").write_text("def f():\n    x = 1\n\n    raise ValueError(x)\n")
    mpy.compile_package(tmp_path / "o3", src=src)
    mpy.compile_package(tmp_path / "o0", src=src, opt=0)
    o3 = (tmp_path / "o3" / "iothub" / "boom.mpy").read_bytes()
    o0 = (tmp_path / "o0" / "iothub" / "boom.mpy").read_bytes()
    assert len(o3) < len(o0)
    assert _traceback_line(tmp_path / "o0") == 4
    assert _traceback_line(tmp_path / "o3") == 1


def test_bad_optimisation_level_is_refused(tmp_path):
    with pytest.raises(mpy.MpyError, match="optimisation level must be 0, 1, 2 or 3, got 4"):
        mpy.compile_package(tmp_path, opt=4)


def test_unknown_march_is_refused(tmp_path):
    with pytest.raises(mpy.MpyError, match="unknown -march"):
        mpy.compile_package(tmp_path, march="z80")


def test_package_json_lists_exactly_the_device_package():
    data = json.loads((ROOT / "package.json").read_text())
    assert data == mpy.package_json(), (
        "package.json is stale: run `python tools/iothub_tool/mpy.py --write-package-json`"
    )
    dests = [d for d, _ in data["urls"]]
    assert dests == device_files()
    for dest, src in data["urls"]:
        assert src == "firmware/" + dest and (ROOT / src).is_file()
        assert not src.startswith(("tools/", "host_tests/", "boards/"))
    assert data["deps"] == []
    init = (PKG / "__init__.py").read_text()
    assert '__version__ = "%s"' % data["version"] in init


# ---- the C module -------------------------------------------------------------------------


def mirror_members():
    src = (TLSX / "tlsx.c").read_text()
    body = re.search(
        r"typedef struct _tlsx_ssl_context_prefix_t \{\n(.*?)\n\} tlsx_ssl_context_prefix_t;",
        src,
        re.S,
    ).group(1)
    lines = [ln.strip() for ln in body.splitlines()]
    # lines of the local negative-test hook (#ifdef TLSX_TEST_WRONG_LAYOUT ... #endif) are not
    # part of a board build
    out, skip = [], False
    for ln in lines:
        if ln.startswith("#ifdef TLSX_TEST_WRONG_LAYOUT"):
            skip = True
        elif ln.startswith("#endif") and skip:
            skip = False
        elif not skip and ln:
            out.append(re.sub(r"\s*//.*$", "", ln))
    return out


def test_mirrored_struct_matches_the_checked_prefix():
    prefix = (TLSX / "sslcontext_prefix.txt").read_text().split("\n")
    assert [p for p in prefix if p] == mirror_members()


def test_both_build_files_check_layout_and_wrap():
    mk = (TLSX / "micropython.mk").read_text()
    cmake = (TLSX / "micropython.cmake").read_text()
    for text in (mk, cmake):
        assert "sslcontext_prefix.txt" in text
        assert "extmod/modtls_mbedtls.c" in text
        assert "-Wl,--wrap=mbedtls_ssl_config_defaults" in text
        assert "tlsx.c" in text
    assert "$(error" in mk and "FATAL_ERROR" in cmake
    top = (ROOT / "firmware" / "cmodules" / "micropython.cmake").read_text()
    assert "tlsx/micropython.cmake" in top


def test_python_names_are_unconditional():
    src = (TLSX / "tlsx.c").read_text()
    table = re.search(r"tlsx_module_globals_table\[\] = \{(.*?)\n\};", src, re.S).group(1)
    assert "#if" not in table, "qstr scanner on CMake ports: keep module names unconditional"
    names = re.findall(r"MP_QSTR_(\w+)\)", table)
    for name in (
        "set_max_fragment_length",
        "get_max_fragment_length",
        "heap_stats",
        "DEFAULT_MFL",
        "IN_CONTENT_LEN",
        "OUT_CONTENT_LEN",
    ):
        assert name in names
    assert "MP_REGISTER_MODULE(MP_QSTR_tlsx, tlsx_user_cmodule);" in src
    # the module registration is not hidden behind a condition either
    before = src[: src.index("MP_REGISTER_MODULE")]
    assert before.count("#if") == before.count("#endif")


def test_wrap_gives_client_contexts_the_board_default():
    # Behaviour, where the binary under test is a tlsx build (skipped on stock MicroPython):
    # the link-time wrap gives a plain client context, made without any tlsx call, the board
    # default; tlsx refuses server contexts (MFL is a client request) instead of guessing.
    # That other libraries' contexts send it on the wire: test_firmware_mfl.py.
    import mpyrun

    caps = mpyrun.tlsx_caps()
    if caps is None:
        pytest.skip("MICROPYTHON=%s has no tlsx module (ImportError)" % mpyrun.micropython_binary())
    got = mpyrun.run_json(
        "import json, tls, tlsx\n"
        "c = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)\n"
        "s = tls.SSLContext(tls.PROTOCOL_TLS_SERVER)\n"
        "try:\n"
        "    tlsx.get_max_fragment_length(s)\n"
        "    server = 'accepted'\n"
        "except ValueError as e:\n"
        "    server = str(e)\n"
        "print(json.dumps([tlsx.get_max_fragment_length(c), server]))"
    )
    assert got[0] == caps["default"], (got, caps)
    assert "server context" in got[1], got


class _BoardFS:
    """The file-system side of an mpremote transport, as a dict (the only seam mip uses)."""

    def __init__(self):
        self.files, self.dirs = {}, {"/lib"}

    def fs_exists(self, path):
        return path in self.dirs or path in self.files

    def fs_mkdir(self, path):
        self.dirs.add(path)

    def fs_writefile(self, path, data, progress_callback=None):
        self.files[path] = data


def test_the_readme_mip_command_installs_every_device_file_from_a_clone(monkeypatch, capsys):
    # README: `.venv/bin/mpremote connect PORT mip install package.json` from the clone's root.
    # mpremote reads package.json and the files it names on the host and writes them to the
    # board; here its installer writes to a dict instead of a serial link.
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/mpremote connect /dev/ttyACM0 mip install package.json" in readme
    from mpremote import mip as mpremote_mip

    board = _BoardFS()
    monkeypatch.chdir(ROOT)
    mpremote_mip._install_package(board, "package.json", "unused-index", "/lib", None, True)
    want = {"/lib/" + f: (ROOT / "firmware" / f).read_bytes() for f in device_files()}
    assert board.files == want
