"""TLS record bookkeeping for the emulator: split a raw byte stream into records and pick
out the few handshake fields the endpoint records (ServerHello suite and MFL echo).

Tests assert on ClientHellos with an independent parser (tlslite-ng); this module is only
the emulator's own accounting (RFC 5246 6.2: type(1) version(2) length(2) fragment)."""

import struct

HEADER = 5
CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
EXT_MAX_FRAGMENT_LENGTH = 1
MFL_CODES = {1: 512, 2: 1024, 3: 2048, 4: 4096}


class RecordCounter:
    """Counts TLS records in one direction of a connection.

    `sizes` lists each record's length field (TLSPlaintext/TLSCiphertext.length: the fragment
    without the 5-byte header; for protected records that includes explicit nonce, MAC/tag and
    padding). `records` keeps the raw bytes (header included) of the first `keep` records."""

    def __init__(self, keep=8):
        self.nbytes = 0
        self.sizes = []
        self.records = []
        self._keep = keep
        self._buf = b""
        self.garbage = False  # set when the stream stopped parsing as TLS records

    @property
    def count(self):
        return len(self.sizes)

    @property
    def max_size(self):
        return max(self.sizes) if self.sizes else 0

    def feed(self, data):
        self.nbytes += len(data)
        if self.garbage:
            return
        self._buf += data
        while len(self._buf) >= HEADER:
            ctype, major, length = (
                self._buf[0],
                self._buf[1],
                struct.unpack(">H", self._buf[3:5])[0],
            )
            if ctype not in (20, 21, 22, 23, 24) or major != 3:
                self.garbage = True
                self._buf = b""
                return
            if len(self._buf) < HEADER + length:
                return
            rec, self._buf = self._buf[: HEADER + length], self._buf[HEADER + length :]
            self.sizes.append(length)
            if len(self.records) < self._keep:
                self.records.append(rec)


def handshake_messages(records):
    """Yield (msg_type, body) of the plaintext handshake messages at the start of `records`
    (raw records, header included), reassembling messages split across records. Stops at the
    first non-handshake record (after ChangeCipherSpec everything is encrypted)."""
    buf = b""
    for rec in records:
        if rec[0] != CT_HANDSHAKE:
            break
        buf += rec[HEADER:]
        while len(buf) >= 4:
            n = struct.unpack(">I", b"\x00" + buf[1:4])[0]
            if len(buf) < 4 + n:
                break
            yield buf[0], buf[4 : 4 + n]
            buf = buf[4 + n :]


def client_hello_records(records):
    """The raw records (headers included) that carry the ClientHello, joined."""
    out = b""
    need = None
    have = 0
    for rec in records:
        if rec[0] != CT_HANDSHAKE:
            break
        out += rec
        frag = rec[HEADER:]
        if need is None and len(frag) >= 4:
            need = 4 + struct.unpack(">I", b"\x00" + frag[1:4])[0]
        have += len(frag)
        if need is not None and have >= need:
            break
    return out


def parse_server_hello(body):
    """(version, cipher_suite_id, extensions dict type->data) from a ServerHello body."""
    version = struct.unpack(">H", body[0:2])[0]
    i = 2 + 32
    sid_len = body[i]
    i += 1 + sid_len
    suite = struct.unpack(">H", body[i : i + 2])[0]
    i += 3  # suite + compression method
    exts = {}
    if i + 2 <= len(body):
        end = i + 2 + struct.unpack(">H", body[i : i + 2])[0]
        i += 2
        while i + 4 <= end:
            etype, elen = struct.unpack(">HH", body[i : i + 4])
            exts[etype] = body[i + 4 : i + 4 + elen]
            i += 4 + elen
    return version, suite, exts


def client_hello_sni(raw):
    """The host_name of the server_name extension (RFC 6066 3) in raw ClientHello records,
    or None. Used when the handshake fails before OpenSSL reports the name."""
    for mtype, body in handshake_messages(split_records(raw)):
        if mtype != HS_CLIENT_HELLO:
            return None
        try:
            i = 2 + 32
            i += 1 + body[i]  # session id
            i += 2 + struct.unpack(">H", body[i : i + 2])[0]  # cipher suites
            i += 1 + body[i]  # compression methods
            end = i + 2 + struct.unpack(">H", body[i : i + 2])[0]
            i += 2
            while i + 4 <= end:
                etype, elen = struct.unpack(">HH", body[i : i + 4])
                if etype == 0:
                    ext = body[i + 4 : i + 4 + elen]
                    # list length(2), name type(1) = 0, name length(2), name
                    if len(ext) >= 5 and ext[2] == 0:
                        n = struct.unpack(">H", ext[3:5])[0]
                        return ext[5 : 5 + n].decode("ascii", "replace")
                    return None
                i += 4 + elen
        except (IndexError, struct.error):
            return None
    return None


def split_records(raw):
    """Raw bytes -> list of complete raw records (headers included)."""
    c = RecordCounter(keep=1 << 30)
    c.feed(raw)
    return c.records
