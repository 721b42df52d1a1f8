# Fuzzing the MQTT decoder with a deterministic generator (coretest.Rng), identical on
# CPython and on the unix port: whatever bytes arrive, in whatever split, the decoder
# returns packets, None, or raises ProtocolError - never another exception. The counts are
# the observation compared between the runtimes.

import mqtt_extra as x
from coretest import Rng

import iothub.mqtt as m
from iothub.errors import ProtocolError

ROUNDS = 2000

# Valid server-to-client packets to mutate.
SEEDS = (
    b"\x20\x02\x00\x00",
    b"\x30\x07\x00\x03a/b" + b"hi",
    b"\x3b\x09\x00\x03a/b\x12\x34hi",
    b"\x40\x02\x00\x07",
    b"\x90\x05\x00\x01\x01\x00\x80",
    b"\xb0\x02\x00\x09",
    b"\xd0\x00",
    b"\x30\x81\x01\x00\x01t" + b"\xab" * 126,
)


def _run(dec, data, rng):
    # Feed in random splits, draining after each feed. Returns (packets, error or None).
    got = 0
    i = 0
    try:
        while i < len(data):
            k = 1 + rng.below(9)
            x.feed(dec, data[i : i + k])
            i += k
            while True:
                p = dec.next()
                if p is None:
                    break
                got += 1
                if p.type == m.PUBLISH:  # touch the fields a client reads
                    p.topic.encode()
                    len(p.payload)
    except ProtocolError:
        return got, True
    except Exception as e:
        raise AssertionError(
            "decoder raised %s (%s) on input %s" % (type(e).__name__, e, bytes(data).hex())
        ) from None
    return got, False


def test_fuzz_random_bytes():
    rng = Rng(20240601)
    packets = errors = 0
    for _ in range(ROUNDS):
        data = rng.bytes(rng.below(48))
        if data and rng.below(2):
            # Half the time start with a plausible header byte and a small length, so the
            # generator reaches the body checks rather than only the first byte.
            head = (0x20, 0x30, 0x32, 0x3B, 0x40, 0x90, 0xB0, 0xD0)[rng.below(8)]
            data = bytes((head, rng.below(len(data)))) + data
        dec = m.Decoder(max_packet=64 + rng.below(4096), bufsize=8 + rng.below(64))
        got, err = _run(dec, data, rng)
        packets += got
        errors += err
    return [packets, errors]


def _mutate(data, rng):
    b = bytearray(data)
    for _ in range(1 + rng.below(3)):
        op = rng.below(4)
        if op == 0 and b:  # flip bits
            b[rng.below(len(b))] ^= 1 << rng.below(8)
        elif op == 1 and b:  # overwrite with a random byte
            b[rng.below(len(b))] = rng.below(256)
        elif op == 2:  # insert (MicroPython's bytearray has no insert())
            i = rng.below(len(b) + 1)
            b = b[:i] + bytearray((rng.below(256),)) + b[i:]
        elif b:  # truncate
            b = b[: rng.below(len(b))]
    return bytes(b)


def test_fuzz_mutated_packets():
    rng = Rng(4242)
    packets = errors = 0
    for _ in range(ROUNDS):
        stream = b"".join(SEEDS[rng.below(len(SEEDS))] for _ in range(1 + rng.below(4)))
        dec = m.Decoder(max_packet=64 + rng.below(512), bufsize=8 + rng.below(64))
        got, err = _run(dec, _mutate(stream, rng), rng)
        packets += got
        errors += err
    return [packets, errors]


def test_fuzz_unmutated_streams_decode_fully():
    # Control: the same generator without mutation yields every packet and no error.
    rng = Rng(4242)
    total = 0
    for _ in range(50):
        n = 1 + rng.below(4)
        stream = b"".join(SEEDS[rng.below(len(SEEDS))] for _ in range(n))
        got, err = _run(m.Decoder(bufsize=8 + rng.below(64)), stream, rng)
        if err or got != n:
            raise AssertionError("valid stream not decoded: %s" % stream.hex())
        total += got
    return total
