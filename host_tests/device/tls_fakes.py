# Tiny stand-ins for firmware the unix port is not: a `tls` module without set_ciphers (old
# MicroPython), one whose mbedTLS lacks suites, and `tlsx` modules (our C module) that work
# or fail. Installed into sys.modules before iothub.tlsprofile first touches them.
import sys

ALL_SUITES = [
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384",
    "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256",
    "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384",
]


def fake_tls(suites=None, set_ciphers=True):
    class Ctx:
        def __init__(self, protocol):
            self.protocol = protocol
            self.verify_mode = 0
            self.cas = []
            self.offered = None

        def load_verify_locations(self, der):
            self.cas.append(der)

        def get_ciphers(self):
            return list(ALL_SUITES if suites is None else suites)

    if set_ciphers:

        def _set(self, names):
            self.offered = list(names)

        Ctx.set_ciphers = _set

    class Tls:
        PROTOCOL_TLS_CLIENT = 0
        CERT_REQUIRED = 2
        SSLContext = Ctx

    sys.modules["tls"] = Tls
    return Tls


def fake_tlsx(fail=None, default=0):
    calls = []  # every size asked for
    state = [default]  # what the context would request

    class Tlsx:
        @staticmethod
        def set_max_fragment_length(ctx, n):
            calls.append(n)
            if fail is not None:
                raise fail
            state[0] = n

        @staticmethod
        def get_max_fragment_length(ctx):
            return state[0]

    Tlsx.calls = calls
    sys.modules["tlsx"] = Tlsx
    return Tlsx
