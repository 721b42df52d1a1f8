"""Board definitions, checked without a MicroPython tree (CI cannot build firmware).

* The buffer presets agree across the unix variant, the ESP32 sdkconfig fragments, the Pico W
  CMake file and the table in boards/README.md, and each preset's default MFL is the one tlsx
  derives from its buffers.
* Each preset's input buffer holds the Certificate message of the chains it claims to support
  (the emulator's Azure-like chains, generated here), and the small presets cannot take a
  16 KB record (so the README's warning about hubs that ignore MFL stands).
* Files the board definitions name exist; manifests include the port's manifest and ours.
* The lines a firmware build depends on (CI cannot build one) are checked in the build files:
  each check names the contract it guards. Prose is not checked.
* Where the binary under test has tlsx, its real DEFAULT_MFL is checked against the derivation.
"""

import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOARDS = ROOT / "boards"
UNIX = BOARDS / "unix-iothub"
ESP32 = BOARDS / "IOTHUB_ESP32"
PICO = BOARDS / "IOTHUB_PICO_W"
COMMON_H = BOARDS / "common" / "mbedtls_config_iothub.h"
PRESETS = ("rsa", "ecc", "stock")
TLS_RECORD_MAX = 16384
HANDSHAKE_FRAMING = 4 + 3  # handshake header + certificate_list length
CERT_FRAMING = 3  # per-certificate length


def readme_presets():
    text = (BOARDS / "README.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| (rsa|ecc|stock) \| (\d+) \| (\d+) \| (\d+) \|", text, re.M):
        rows[m.group(1)] = tuple(int(x) for x in m.group(2, 3, 4))
    return rows


def unix_presets():
    text = (UNIX / "mpconfigvariant.mk").read_text()
    out = {}
    for m in re.finditer(
        r"ifeq \(\$\(IOTHUB_TLS_BUFFERS\),(\w+)\)\nIOTHUB_TLS_IN \?= (\d+)\nIOTHUB_TLS_OUT \?= (\d+)",
        text.replace("else ifeq", "ifeq"),
    ):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def esp32_presets():
    out = {}
    for preset in PRESETS:
        text = (ESP32 / ("sdkconfig.tls_" + preset)).read_text()
        i = int(re.search(r"^CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=(\d+)$", text, re.M).group(1))
        o = int(re.search(r"^CONFIG_MBEDTLS_SSL_OUT_CONTENT_LEN=(\d+)$", text, re.M).group(1))
        out[preset] = (i, o)
    return out


def pico_presets():
    text = (PICO / "mpconfigboard.cmake").read_text()
    out = {}
    for m in re.finditer(
        r'IOTHUB_TLS_BUFFERS STREQUAL "(\w+)"\)\n\s+set\(IOTHUB_TLS_IN (\d+)\)\n\s+set\(IOTHUB_TLS_OUT (\d+)\)',
        text,
    ):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def tlsx_default_mfl(i, o):
    """What tlsx.c derives when a board sets no TLSX_DEFAULT_MFL (see its #if chain)."""
    if i >= TLS_RECORD_MAX:
        return 0
    for size in (4096, 2048, 1024):
        if min(i, o) >= size:
            return size
    return 512


def test_presets_agree_everywhere():
    doc = readme_presets()
    assert set(doc) == set(PRESETS), doc
    for name, source in (
        ("unix variant", unix_presets()),
        ("ESP32", esp32_presets()),
        ("Pico W", pico_presets()),
    ):
        assert set(source) == set(PRESETS), (name, source)
        for preset in PRESETS:
            assert source[preset] == doc[preset][:2], (name, preset, source[preset])


def test_documented_default_mfl_is_what_tlsx_derives():
    for preset, (i, o, mfl) in readme_presets().items():
        assert mfl == tlsx_default_mfl(i, o), preset
        assert mfl == 0 or mfl <= min(i, o)


def test_tlsx_derivation_matches_its_source():
    # Contract: the #if chain in tlsx.c is what tlsx_default_mfl() (and the README table's
    # default MFL column) mirrors; a build would silently pick another default otherwise.
    src = (ROOT / "firmware" / "cmodules" / "tlsx" / "tlsx.c").read_text()
    chain = re.search(r"#ifndef TLSX_DEFAULT_MFL\n(.*?)\n#endif\n#endif", src, re.S).group(1)
    assert "#if MBEDTLS_SSL_IN_CONTENT_LEN >= 16384\n#define TLSX_DEFAULT_MFL (0)" in chain
    for size in (4096, 2048, 1024):
        assert "TLSX_BUF_MIN >= %d\n#define TLSX_DEFAULT_MFL (%d)" % (size, size) in chain
    assert "#else\n#define TLSX_DEFAULT_MFL (512)" in chain


@pytest.fixture(scope="module")
def chain_sizes(pki):
    return pki.sizes()


def certificate_message(sizes, profile):
    row = sizes[profile]
    return HANDSHAKE_FRAMING + 2 * CERT_FRAMING + row["leaf"] + row["intermediate"]


def test_input_buffers_hold_the_chains_they_claim(chain_sizes):
    doc = readme_presets()
    rsa_msg = certificate_message(chain_sizes, "rsa")
    ecc_msg = certificate_message(chain_sizes, "ecc")
    # rsa: both chains, with at least 1 KB to spare for a longer real leaf
    assert doc["rsa"][0] >= rsa_msg + 1024 and doc["rsa"][0] >= ecc_msg + 1024
    # ecc: the ECC chain with 1 KB to spare; it makes no claim for RSA hubs
    assert doc["ecc"][0] >= ecc_msg + 1024
    # the sizes the README quotes are the ones the emulator makes (keys vary by a few bytes)
    text = (BOARDS / "README.md").read_text()
    quoted = {
        "rsa": int(re.search(r"(\d+) B DER for RSA", text).group(1)),
        "ecc": int(re.search(r"and (\d+) B for ECC", text).group(1)),
    }
    for profile, n in quoted.items():
        sent = chain_sizes[profile]["leaf"] + chain_sizes[profile]["intermediate"]
        assert abs(sent - n) < 200, (profile, sent, n)


def test_small_presets_cannot_take_full_records():
    for preset, (i, _o, mfl) in readme_presets().items():
        if preset == "stock":
            assert i >= TLS_RECORD_MAX
        else:
            assert i < TLS_RECORD_MAX and mfl > 0, preset


# ---- build contracts ------------------------------------------------------------------------
# CI cannot build firmware, so the lines a build depends on are checked where they are written.
# Each one guards a contract stated next to it; nothing here checks wording or optional tuning.


def test_common_mbedtls_header():
    text = COMMON_H.read_text()
    # the port's own mbedTLS configuration stays the base (its ciphers, entropy, platform)
    assert '#include "mbedtls/mbedtls_config_port.h"' in text
    # tlsx.set_max_fragment_length needs MFL compiled into mbedTLS
    assert "#define MBEDTLS_SSL_MAX_FRAGMENT_LENGTH" in text
    # MFL with TLS 1.3 aborts the handshake in mbedTLS: contexts are TLS 1.2 only
    assert "#undef MBEDTLS_SSL_PROTO_TLS1_3" in text
    # the preset's buffer sizes are the ones compiled in (the README table's IN/OUT)
    for name in ("IN", "OUT"):
        assert "#undef MBEDTLS_SSL_%s_CONTENT_LEN" % name in text
        assert "#define MBEDTLS_SSL_%s_CONTENT_LEN (IOTHUB_TLS_%s)" % (name, name) in text


# mbedTLS key-exchange macro per suite prefix (mbedTLS spelling, as in iothub.tlsprofile.SUITES)
KEY_EXCHANGE_MACRO = {
    "TLS-ECDHE-ECDSA": "MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED",
    "TLS-ECDHE-RSA": "MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED",
    "TLS-RSA": "MBEDTLS_KEY_EXCHANGE_RSA_ENABLED",
    "TLS-PSK": "MBEDTLS_KEY_EXCHANGE_PSK_ENABLED",
}
# curve names of the cryptography package -> mbedTLS curve macro
CURVE_MACRO = {
    "secp256r1": "MBEDTLS_ECP_DP_SECP256R1_ENABLED",
    "secp384r1": "MBEDTLS_ECP_DP_SECP384R1_ENABLED",
}


def test_mbedtls_header_keeps_what_the_profiles_and_chains_need(tmp_path):
    """The common header removes key exchanges and curves: never one a TLS profile offers, one
    the emulator's Azure-like chains are signed with, or one an X.509 device key uses."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from iothub import tlsprofile
    from iothub_emulator.pki import TestPKI, pem_to_der_list

    text = COMMON_H.read_text()
    undef = set(re.findall(r"^#undef (MBEDTLS_\w+)", text, re.M))
    offered = {s for suites in tlsprofile.SUITES.values() for s in suites}
    for suite in offered:
        kx = suite.split("-WITH-")[0]
        assert KEY_EXCHANGE_MACRO[kx] not in undef, suite
    # every removed key exchange is one no profile offers
    used = {KEY_EXCHANGE_MACRO[s.split("-WITH-")[0]] for s in offered}
    removed = {m for m in undef if m.startswith("MBEDTLS_KEY_EXCHANGE_")}
    assert removed and not removed & used, removed
    # curves: the keys of both chains (root, intermediate, leaf) and of X.509 devices
    pki = TestPKI.load_or_create(str(tmp_path / "pki"))
    keys = []
    for profile in ("ecc", "rsa"):
        chain = pathlib.Path(pki.server_credentials(profile)[0]).read_bytes()
        ders = [pki.root_der(profile)] + pem_to_der_list(chain)  # root, leaf, intermediate
        keys += [x509.load_der_x509_certificate(d).public_key() for d in ders]
    for kind in ("ec256", "ec384"):
        cert_pem = pki.issue_client_cert("dev-" + kind, kind=kind)[0]
        if isinstance(cert_pem, str):
            cert_pem = cert_pem.encode()
        keys.append(x509.load_pem_x509_certificate(cert_pem).public_key())
    curves = {k.curve.name for k in keys if isinstance(k, ec.EllipticCurvePublicKey)}
    assert curves == {"secp256r1", "secp384r1"}, curves
    for name in curves:
        assert CURVE_MACRO[name] not in undef, name
    # the buffers shrink to the agreed MFL after the handshake (needs MFL compiled in)
    # ... only where MFL is requested: without one, mbedTLS 3.6 would shrink the input buffer
    # to min(IN, OUT) and refuse a hub's full-size records (stock preset)
    assert (
        "#if MBEDTLS_SSL_IN_CONTENT_LEN < %d\n#define MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH\n#endif"
        % TLS_RECORD_MAX
    ) in text
    assert "#define MBEDTLS_SSL_MAX_FRAGMENT_LENGTH" in text


def test_unix_variant_files():
    mk = (UNIX / "mpconfigvariant.mk").read_text()
    # the variant builds with our mbedTLS header (found through the include path)
    assert 'MBEDTLS_CONFIG_FILE = \\"mbedtls_config_iothub.h\\"' in mk
    assert "-I$(VARIANT_DIR)/../common" in mk
    h = (UNIX / "mpconfigvariant.h").read_text()
    # a unix variant must pull in the port's common variant settings to build at all
    assert '#include "variants/mpconfigvariant_common.h"' in h


def test_esp32_board_files():
    cmake = (ESP32 / "mpconfigboard.cmake").read_text()
    # the chosen buffer preset and our mbedTLS settings reach ESP-IDF's sdkconfig
    assert "${MICROPY_BOARD_DIR}/sdkconfig.tls_${IOTHUB_TLS_BUFFERS}" in cmake
    assert "${MICROPY_BOARD_DIR}/sdkconfig.iothub" in cmake
    # on top of the port's own base configuration, not instead of it
    assert "boards/sdkconfig.base" in cmake
    # the package is frozen into the image
    assert "set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)" in cmake
    frag = (ESP32 / "sdkconfig.iothub").read_text()
    # the same three mbedTLS contracts as the common header, in ESP-IDF's spelling
    assert "CONFIG_MBEDTLS_SSL_MAX_FRAGMENT_LENGTH=y" in frag
    assert "CONFIG_MBEDTLS_SSL_PROTO_TLS1_3=n" in frag
    assert "CONFIG_MBEDTLS_ASYMMETRIC_CONTENT_LEN=y" in frag
    # variable buffers would shrink IN to min(IN, OUT) after a handshake without MFL
    assert "\nCONFIG_MBEDTLS_DYNAMIC_BUFFER=y" not in frag


def test_pico_w_board_files():
    cmake = (PICO / "mpconfigboard.cmake").read_text()
    # the board's mbedTLS configuration is the common header, with the preset's sizes
    m = re.search(r"set\(MBEDTLS_CONFIG_FILE \$\{MICROPY_BOARD_DIR\}/(\S+)\)", cmake)
    assert m and (PICO / m.group(1)).resolve() == COMMON_H.resolve()
    assert "IOTHUB_TLS_IN=${IOTHUB_TLS_IN}" in cmake
    # the package is frozen into the image
    assert "set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)" in cmake
    h = (PICO / "mpconfigboard.h").read_text()
    # the Pico W's own pins, Wi-Fi and flash layout stay the base
    assert '#include "boards/RPI_PICO_W/mpconfigboard.h"' in h


def test_built_tlsx_default_mfl_is_the_derived_one():
    # (set IOTHUB_TLSX_DEFAULT_MFL when testing a build made with that override)
    # behaviour, where the binary under test is a tlsx build (skipped on stock MicroPython)
    import mpyrun

    caps = mpyrun.tlsx_caps()
    if caps is None:
        pytest.skip("MICROPYTHON=%s has no tlsx module (ImportError)" % mpyrun.micropython_binary())
    # a build may override the default (IOTHUB_TLSX_DEFAULT_MFL=...): then it must still be a
    # size RFC 6066 allows that fits the build's buffers; without one it is the derived size
    assert caps["default"] in (0, 512, 1024, 2048, 4096), caps
    assert caps["default"] <= min(caps["in"], caps["out"]), caps
    override = os.environ.get("IOTHUB_TLSX_DEFAULT_MFL")
    if override is None:
        assert caps["default"] == tlsx_default_mfl(caps["in"], caps["out"]), caps
    else:
        assert caps["default"] == int(override), caps


class _Manifest:
    """Records what a MicroPython manifest.py asks for (the calls of tools/manifestfile.py)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.includes = []
        self.packages = []
        self.requires = []
        self.meta = {}

    def run(self):
        api = {
            "include": lambda p, **kw: self.includes.append(p),
            "require": lambda name, **kw: self.requires.append(name),
            "package": lambda name, files=None, base_path=".", opt=None: self.packages.append(
                (name, base_path)
            ),
            "module": lambda *a, **kw: None,
            "freeze": lambda *a, **kw: None,
            "metadata": lambda **kw: self.meta.update(kw),
            "options": None,
        }
        exec(compile(self.path.read_text(), str(self.path), "exec"), api)
        return self

    def local(self, p):
        return (self.path.parent / p).resolve()


def test_firmware_manifest_freezes_the_package():
    m = _Manifest(ROOT / "firmware" / "manifest.py").run()
    assert m.packages == [("iothub", ".")]
    assert (m.local("iothub") / "__init__.py").is_file()
    assert m.meta.get("version")


@pytest.mark.parametrize(
    "board,port_manifest",
    [
        (UNIX, "$(PORT_DIR)/variants/manifest.py"),
        (ESP32, "$(PORT_DIR)/boards/manifest.py"),
        (PICO, "$(PORT_DIR)/boards/RPI_PICO_W/manifest.py"),
    ],
)
def test_board_manifests_include_port_and_package(board, port_manifest):
    m = _Manifest(board / "manifest.py").run()
    assert m.includes[0] == port_manifest
    local = [p for p in m.includes if not p.startswith("$(")]
    assert local == ["../../firmware/manifest.py"]
    assert m.local(local[0]) == (ROOT / "firmware" / "manifest.py").resolve()
