# What the client says about what the hub sent it: the texts of the ProtocolErrors the
# handler path raises (a topic, a twin body or a $version it cannot take) and of the lines
# it logs there. Loaded for one message and dropped again (errors.explained): the resident
# handler code (inbound, jsonc, pct, twin) keeps a code, not the text. Codes: the _E_ and
# _L_ constants of the module that raises or logs. (The ConfigErrors of iothub.topics and
# iothub.twin are in iothub.topicserr.)

_TEXTS = (
    # 0..6: ProtocolError(text % value)
    "twin response status is not an integer: %r",
    "twin response $version is not an integer: %r",
    "desired properties $version is not an integer: %r",
    "twin response without a $rid",
    "method request topic without a method name",
    "method request without a $rid",
    "module input topic without an input name",
    # 7..9: what is not a JSON object (% its type)
    "desired properties patch is not a JSON object (got %s)",
    "the twin document is not a JSON object (got %s)",
    "the twin's desired properties is not a JSON object (got %s)",
    # 10, 11: a $version that is not an integer in 0..2^53 (% the value)
    "desired properties patch $version is not an integer in 0..2^53: %r",
    "the twin's desired $version is not an integer in 0..2^53: %r",
    # 12, 13
    "the hub sent a payload that is not valid JSON",
    "percent-encoded text does not decode to valid UTF-8",
    # 14..: lines logged (level 0), % args
    "twin request %s failed with status %d",
    "on_message raised %r",
    "on_desired raised %r",
    "method %s raised %r",
    # 18, 19: reported through on_error("twin", text)
    "desired patch skipped: %s",
    "twin re-sync skipped: %s",
    # 20..: logged at level 1
    "ignored a message on an unexpected topic",
    "twin re-sync failed (%s); retrying in 5 s",
)


def error(code, v):
    """The ProtocolError of code (v: the value it is about)."""
    from .errors import ProtocolError

    t = _TEXTS[code]
    if 7 <= code <= 9:
        v = type(v).__name__
    elif isinstance(v, str):
        v = v[:20]  # what the hub sent, shortened
    return ProtocolError(t % (v,) if "%" in t else t)


def log(c, code, args):
    """Log line code of client c (% args); 18 and 19 are reported (reports.report)."""
    t = _TEXTS[code] % args
    if code >= 20:
        c._log_line(1, t)
    elif code >= 18:
        from .errors import explained

        explained("reports", "report", c, "twin", t)
    else:
        c._log_line(0, t)


def bad_status(status):
    return ValueError("method handler returned status %r" % (status,))


def failed(c, name, e):
    """The body of a method's 500 answer (e: what its handler raised), logged."""
    from .jsonc import dumps

    log(c, 17, (name, e))
    return dumps({"error": type(e).__name__ + ": " + str(e)}).encode()
