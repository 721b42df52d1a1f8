# The texts of a TLS configuration that cannot be made: bad settings (ConfigError), a
# firmware without the TLS capabilities the SDK needs (TLSError), and a max fragment length
# that cannot be requested. Loaded for one message (errors.explained) and dropped again, so
# a client that configures its context without trouble never holds these strings in RAM.
# The codes are iothub.tlsconf's and iothub.tlsdesc's.

from .errors import ConfigError, TLSError

# Codes 1-8: ConfigError (7, 8: iothub.tlsdesc's); 9-14: TLSError; 15-19: texts (the
# warning, the reasons a max fragment length is not requested, the printed warning).
_TEXTS = (
    "unknown TLS profile %r: expected 'rsa' (RSA hub) or 'ecc' (ECC hub)",
    "max_fragment_length must be 512, 1024, 2048 or 4096 (RFC 6066), got %r",
    "require_mfl=True needs max_fragment_length= (512, 1024, 2048 or 4096)",
    "mutual TLS needs both cert= and key= (got only %s)",
    "roots[%d]: the firmware rejected the certificate (%s)",
    # firmware messages like "invalid key" never hold key material; kept short anyway
    "client certificate or key rejected by the firmware: %.60s",
    "roots= must be a list of DER or PEM certificates, got %s",
    "roots= is empty: at least one root certificate is needed",
    "this firmware has no `tls` module: MicroPython 1.23 or newer with mbedTLS is needed",
    "this firmware's `tls` module has no SSLContext: MicroPython 1.23 or newer is needed",
    "this MicroPython's tls.SSLContext has no set_ciphers(): version 1.23 or newer is needed",
    "this firmware's mbedTLS has none of the %r profile's cipher suites (%s)",
    "the firmware refused the %r profile's cipher suites: %s",
    "max_fragment_length=%d required but not possible: %s",
    "warning: TLS max fragment length %d not requested (%s); the hub may send larger records",
    "this firmware cannot request it (no tlsx module; stock MicroPython)",
    "tlsx could not set it: %s",
    "tlsx could not set it: %s; the board default is requested",
    "iothub: %s",  # the warning, printed when there is no log function
)


def error(code, args):
    """The exception of a code (1-14), its text filled in with args."""
    return (ConfigError if code <= 8 else TLSError)(text(code, args))


def text(code, args):
    """The text of a code, filled in with args."""
    return _TEXTS[code - 1] % args
