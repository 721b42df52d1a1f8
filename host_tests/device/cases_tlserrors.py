# The TLS error table (iothub.tlserrors): run on CPython and on the unix port (coretest.py).
# Every code the SDK acts on has one outcome and at most one explanation, and the read path
# and the handshake path explain a code in the same words.

from coretest import eq, has, raises

import iothub.tlserrors as t
from iothub.errors import ConnectionLost, TLSError


def test_read_outcomes():
    for code in (11, 35, 110, 116, -0x6900, -0x6880):
        eq(t.read_outcome(OSError(code)), None, "%d means: nothing to read yet" % code)
    eq(t.read_outcome(OSError(-0x7880)), 0, "close notify is the end of the stream")
    msg = raises(ConnectionLost, t.read_outcome, OSError(-0x7100))
    has(msg, "does not fit this firmware's TLS input buffer")
    has(msg, "mbedTLS -0x7100")
    msg = raises(ConnectionLost, t.read_outcome, OSError(104, "ECONNRESET"))
    has(msg, "ECONNRESET")
    raises(ConnectionLost, t.read_outcome, OSError("no code"))
    return msg


def test_one_explanation_per_code():
    names = set()
    for code, (name, outcome, text) in t.CODES.items():
        eq(name in names, False, "one entry per name: %s" % name)
        names.add(name)
        eq(outcome in (t.AGAIN, t.CLOSED, t.FAILED), True, name)
        if outcome == t.FAILED and code < 0:
            eq(isinstance(text, str) and len(text) > 20, True, "%s is explained" % name)
    eq(t.explain(-0x1234), None)
    return sorted(names)


def test_handshake_and_read_say_the_same():
    for code in (-0x7100, -0x7200, -0x6E80, -0x7080):
        err = t.handshake_error(OSError(code), "hub.example")
        eq(isinstance(err, TLSError), True)
        eq(err.code, code)
        has(str(err), t.explain(code), "handshake explanation of -0x%04X" % -code)
        read = raises(ConnectionLost, t.read_outcome, OSError(code))
        has(read, t.explain(code), "read explanation of -0x%04X" % -code)
    eq(t.handshake_error(OSError(-0x7100), "h").reason, "buffer")
    alert = t.handshake_error(OSError(-0x7780), "h", {"profile": "ecc"})
    eq(alert.reason, "refused")
    has(str(alert), t.explain(-0x7780))
    has(str(alert), "use profile 'rsa'")
    # a socket error code is not a TLS verdict: no mbedTLS explanation is attached
    eq(t.handshake_error(OSError(110), "h").reason, "other")


def test_allocation_failures_say_out_of_memory():
    # seen on the Pico W-like build (mbedTLS in the GC heap) at its smallest heaps:
    # X509_ALLOC_FAILED during the handshake; also SSL, PK, ECP and the low-level parts
    # (MPI, ASN.1) of a combined code
    for code in (-0x2880, -0x7F00, -0x3F80, -0x4D80, -0x0010, -0x2880 - 0x006A, -0x3B00 - 0x0010):
        err = t.handshake_error(OSError(code, "alloc"), "h")
        eq(err.reason, "memory", "-0x%04X" % -code)
        has(str(err), "ran out of memory")
        has(raises(ConnectionLost, t.read_outcome, OSError(code)), "ran out of memory")
    for code in (-0x2700, -0x7100, -0x0062, -0x3B00):
        eq(t.out_of_memory(code), False, "-0x%04X" % -code)


def test_handshake_without_memory_says_so():
    # ENOMEM from the firmware's wrap (seen on the Pico W-like build when no block fits the
    # TLS buffers): named as memory, not as a bare socket error
    from iothub.linkopen import tls_error

    err = tls_error(OSError(12, "ENOMEM"), "hub.example", None)
    eq(isinstance(err, ConnectionLost), True)
    has(str(err), "out of memory (ENOMEM)")
    has(str(err), "hub.example")
    has(str(tls_error(OSError(104), "h", None)), "socket error")
