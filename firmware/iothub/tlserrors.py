# The one table of the TLS error codes the SDK meets, each with its one explanation, and the
# plain-words explanation of failed handshakes. Loaded only when a handshake or a read
# fails, so a device whose link works never pays for these strings in RAM.
#
# mbedTLS codes: include/mbedtls/ssl.h and x509.h (the same values from MicroPython 1.23's
# mbedTLS 2.28 to 3.6). errno values differ between ports: Linux, and lwIP (esp32, rp2),
# use 11 for EAGAIN; BSD and macOS 35; ETIMEDOUT is 110 on Linux and 116 on lwIP.
from .errors import ConnectionLost, TLSError

AGAIN = 0  # nothing to read yet: wait and read again
CLOSED = 1  # the peer ended the connection cleanly
FAILED = 2  # an error: the link is lost

# code: (mbedTLS name or errno, outcome on read, explanation or None)
CODES = {
    11: ("EAGAIN", AGAIN, None),
    35: ("EAGAIN (BSD)", AGAIN, None),
    110: ("ETIMEDOUT", AGAIN, None),
    116: ("ETIMEDOUT (lwIP)", AGAIN, None),
    -0x6900: ("MBEDTLS_ERR_SSL_WANT_READ", AGAIN, None),
    -0x6880: ("MBEDTLS_ERR_SSL_WANT_WRITE", AGAIN, None),
    -0x7880: ("MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY", CLOSED, None),
    -0x7780: (
        "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE",
        FAILED,
        "the server sent a fatal alert and closed the connection",
    ),
    -0x6E80: (
        "MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION",
        FAILED,
        "the server offered a TLS version older than 1.2, which this client refuses",
    ),
    -0x7200: (
        "MBEDTLS_ERR_SSL_INVALID_RECORD",
        FAILED,
        "the server sent something that is not a valid TLS record: a service that does not "
        "speak TLS on this port (plain HTTP or MQTT?), or a record over the record size "
        "limit (a server that ignored max fragment length)",
    ),
    -0x2700: (
        "MBEDTLS_ERR_X509_CERT_VERIFY_FAILED",
        FAILED,
        "the server certificate did not verify",
    ),
    -0x7080: (
        "MBEDTLS_ERR_SSL_FEATURE_UNAVAILABLE",
        FAILED,
        "no cipher suite in common with the server",
    ),
    -0x7100: (
        "MBEDTLS_ERR_SSL_BAD_INPUT_DATA",
        FAILED,
        "a TLS record or handshake message does not fit this firmware's TLS input buffer%s: "
        "the hub ignored max fragment length, or its certificate chain is too large (mbedTLS "
        "reassembles handshake messages there whatever the max fragment length); use the "
        "ECC profile or firmware with a larger MBEDTLS_SSL_IN_CONTENT_LEN (the stock 16 KB)",
    ),
}
_ALERT = -0x7780
_BUFFER = -0x7100
# mbedTLS's ..._ALLOC_FAILED codes (ssl.h, x509.h, pk.h, ecp.h; bignum.h and asn1.h for the
# low-level part of a combined code). On a board whose mbedTLS allocates from the GC heap
# (the Pico W) a handshake that runs out of memory fails with one of these.
_ALLOC_HIGH = (0x7F00, 0x2880, 0x3F80, 0x4D80)
_ALLOC_LOW = (0x10, 0x6A)
_MEMORY = "mbedTLS ran out of memory: the heap is too small or too fragmented for this handshake"


def out_of_memory(code):
    """True for an mbedTLS code that says an allocation failed."""
    return (
        isinstance(code, int)
        and code < 0
        and ((-code) & 0xFF80 in _ALLOC_HIGH or (-code) & 0x7F in _ALLOC_LOW)
    )


def explain(code):
    """The explanation of a code in CODES (the input buffer size filled in), or None."""
    if out_of_memory(code):
        return _MEMORY
    entry = CODES.get(code)
    if entry is None or entry[2] is None:
        return None
    return entry[2] % _in_len() if code == _BUFFER else entry[2]


def read_outcome(e):
    """What an OSError from a non-blocking read means: AGAIN (None: nothing yet), CLOSED (0)
    or, for anything else, ConnectionLost raised with the table's explanation."""
    code = e.args[0] if e.args else None
    outcome = CODES.get(code, (None, FAILED, None))[1] if isinstance(code, int) else FAILED
    if outcome == AGAIN:
        return None
    if outcome == CLOSED:
        return 0
    why = explain(code)
    raise ConnectionLost("read failed: %s(%s)" % (why + " " if why else "", _code_text(e, code)))


def _code_text(e, code):
    text = " ".join(str(e.args[-1] if e.args else e).split())
    if isinstance(code, int) and code < 0:
        return (
            "%s, mbedTLS -0x%04X" % (text, -code)
            if text != str(code)
            else "mbedTLS -0x%04X" % -code
        )
    return text


def handshake_error(e, hostname, info=None):
    """A TLSError that says in plain words why a handshake failed (e: the firmware's error).

    The result has `.code` (the mbedTLS error code or None) and `.reason`: "untrusted",
    "expired", "not-yet-valid", "hostname", "refused" (fatal alert), "buffer" (a record or
    handshake message larger than the input buffer), "memory" (mbedTLS could not allocate)
    or "other"."""
    profile = (info or {}).get("profile")
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    text = str(e.args[-1] if e.args else e).strip()
    low = text.lower()
    why = []
    reason = "other"
    if isinstance(e, ValueError) or code == -0x2700:
        if "expired" in low:
            reason = "expired"
            why.append("the server certificate has expired (or the device clock is wrong)")
        if "future" in low:
            reason = "not-yet-valid"
            why.append("the server certificate is not valid yet: is the device clock set?")
        if "cn" in low or "common name" in low:
            reason = "hostname"
            why.append("the server certificate is not valid for host name %r" % hostname)
        if "trusted" in low:
            reason = "untrusted"
            names = ", ".join(r["name"] for r in (info or {}).get("roots", ())) or "?"
            why.append(
                "the server certificate does not chain to a trusted root (this context trusts: %s). "
                "RSA hubs chain to DigiCert Global Root G2 (profile 'rsa'), ECC hubs to G3 "
                "(profile 'ecc'); gateways and private CAs need roots=" % names
            )
            # mbedTLS reports running out of memory while checking a signature as this same
            # verification failure (seen on a Pico W-like build just below its smallest heap).
            why.append(
                "if the roots are right, the heap may be too small for verifying the chain "
                "(mbedTLS reports that the same way)"
            )
        if not why:
            why.append(explain(-0x2700))
    elif code == _ALERT:
        reason = "refused"
        if profile == "ecc":
            other = "an RSA hub (use profile 'rsa')"
        elif profile == "rsa":
            other = "an ECC hub (use profile 'ecc')"
        else:
            other = "a server with other suites"
        why.append(
            "%s: most likely it accepts none of the %r profile's cipher suites, i.e. it is %s, "
            "or it only speaks TLS 1.0/1.1" % (explain(_ALERT), profile, other)
        )
    elif code is not None:
        if code == _BUFFER:
            reason = "buffer"
        elif out_of_memory(code):
            reason = "memory"
        hint = explain(code)
        if hint is not None:
            why.append(hint)
    text = " ".join(text.split())  # mbedTLS verify text spans lines
    if code is not None:
        text = "%s, mbedTLS -0x%04X" % (text, -code) if code < 0 else "%s, %d" % (text, code)
    err = TLSError(
        "TLS handshake with %s failed: %s (%s)" % (hostname, "; ".join(why) or "error", text)
    )
    err.code = code
    err.reason = reason
    return err


def _in_len():
    try:
        import tlsx

        return " (%d bytes)" % tlsx.IN_CONTENT_LEN
    except (ImportError, AttributeError):
        return ""
