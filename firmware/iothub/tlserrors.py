# Plain-words explanations of failed TLS handshakes. Loaded only when a handshake fails,
# so a device that connects fine never pays for these strings in RAM.
from .errors import TLSError

_ALERT = -0x7780  # MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE
_HINTS = {
    -0x6E80: "the server offered a TLS version older than 1.2, which this client refuses",
    -0x7200: "the server sent something that is not a valid TLS record: a service that does "
    "not speak TLS on this port (plain HTTP or MQTT?), or a record larger than the input "
    "buffer (a server that ignored max fragment length)",
    -0x2700: "the server certificate did not verify",
    -0x7080: "no cipher suite in common with the server",
    -0x7100: "a handshake message (likely the server's certificate chain) does not fit this "
    "firmware's TLS input buffer%s: mbedTLS reassembles it there whatever the max fragment "
    "length; use the ECC profile or firmware with a larger MBEDTLS_SSL_IN_CONTENT_LEN",
}


def handshake_error(e, hostname, info=None):
    """A TLSError that says in plain words why a handshake failed (e: the firmware's error).

    The result has `.code` (the mbedTLS error code or None) and `.reason`: "untrusted",
    "expired", "not-yet-valid", "hostname", "refused" (fatal alert), "buffer" (a handshake
    message larger than the input buffer) or "other"."""
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
        if not why:
            why.append("the server certificate was refused")
    elif code == _ALERT:
        reason = "refused"
        if profile == "ecc":
            other = "an RSA hub (use profile 'rsa')"
        elif profile == "rsa":
            other = "an ECC hub (use profile 'ecc')"
        else:
            other = "a server with other suites"
        why.append(
            "the server refused the handshake (fatal alert): most likely it accepts none of the "
            "%r profile's cipher suites, i.e. it is %s, or it only speaks TLS 1.0/1.1"
            % (profile, other)
        )
    elif code == -0x7100:
        reason = "buffer"
        why.append(_HINTS[code] % _in_len())
    elif code in _HINTS:
        why.append(_HINTS[code])
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
