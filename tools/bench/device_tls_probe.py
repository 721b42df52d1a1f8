# Device-side TLS probe, run on the MicroPython unix port (not on CPython).
#
#   micropython device_tls_probe.py HOST PORT SERVER_HOSTNAME ROOT_DER_PATH MFL NBYTES
#
# MFL: -1 leaves the context as the firmware made it (board default), 0 asks for
# nothing, 512/1024/2048/4096 call tlsx.set_max_fragment_length(). Connects,
# handshakes (root pinned, host name checked), sends "GET NBYTES\n", reads NBYTES
# bytes of application data, closes, and prints one JSON line: what was requested,
# the SHA-256 of what was read, the handshake's duration, mbedTLS heap figures when
# the firmware counts them (tlsx.heap_stats, per phase with tlsx.heap_phases), or the
# error. Used by host_tests/test_firmware_mfl.py and
# tools/bench/bench_tls_heap.py.
import hashlib
import json
import socket
import sys
import time

import tls

try:
    import tlsx
except ImportError:
    tlsx = None


def heap():
    if tlsx is None:
        return None
    try:
        return tlsx.heap_stats(True)
    except NotImplementedError:
        return None


def phases(reset=False):
    if tlsx is None or not hasattr(tlsx, "heap_phases"):
        return None
    try:
        return tlsx.heap_phases(reset)
    except NotImplementedError:
        return None


def hexdigest(h):
    return "".join("%02x" % b for b in h.digest())


def main(argv):
    host, port, hostname, root_path = argv[0], int(argv[1]), argv[2], argv[3]
    mfl, nbytes = int(argv[4]), int(argv[5])
    out = {"tlsx": tlsx is not None, "requested_mfl": None, "error": None, "stage": "context"}
    if tlsx is not None:
        out["in_content_len"] = tlsx.IN_CONTENT_LEN
        out["out_content_len"] = tlsx.OUT_CONTENT_LEN
        out["default_mfl"] = tlsx.DEFAULT_MFL
    base = heap()
    sock = None
    ssock = None
    try:
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        with open(root_path, "rb") as f:
            ctx.load_verify_locations(f.read())  # tls: positional (DER)
        if tlsx is not None:
            if mfl >= 0:
                tlsx.set_max_fragment_length(ctx, mfl)
            out["requested_mfl"] = tlsx.get_max_fragment_length(ctx)
        ctx_heap = heap()
        out["stage"] = "connect"
        sock = socket.socket()
        sock.settimeout(20)
        sock.connect(socket.getaddrinfo(host, port)[0][-1])
        out["stage"] = "handshake"
        phases(True)
        t0 = time.ticks_us()
        ssock = ctx.wrap_socket(sock, server_hostname=hostname)
        out["handshake_us"] = time.ticks_diff(time.ticks_us(), t0)
        hs_phases = phases()
        hs_heap = heap()
        out["cipher"] = ssock.cipher()
        out["stage"] = "data"
        ssock.write(b"GET %d\n" % nbytes)
        h = hashlib.sha256()
        got = 0
        while got < nbytes:
            chunk = ssock.read(min(2048, nbytes - got))
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        out["received"] = got
        out["sha256"] = hexdigest(h)
        data_heap = heap()
        out["stage"] = "done"
        if base is not None:
            # heap_stats(True) returned (current, peak) and restarted the peak, so
            # each figure below is the peak of one phase; report it against `base`.
            b = base[0]
            out["heap"] = {
                "base": b,
                "context_peak": ctx_heap[1] - b,
                "context_held": ctx_heap[0] - b,
                "handshake_peak": hs_heap[1] - b,
                "after_handshake": hs_heap[0] - b,
                "data_peak": data_heap[1] - b,
                "peak": max(ctx_heap[1], hs_heap[1], data_heap[1]) - b,
            }
            if hs_phases is not None:
                # [name, highest heap in the phase, heap held at its end], against `base`
                out["heap"]["phases"] = [[n, p - b, h - b] for n, p, h in hs_phases]
    except Exception as e:  # report, do not hide: the test/bench decides
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        for s in (ssock, sock):
            if s is not None:
                try:
                    s.close()
                except Exception:
                    pass
    if base is not None and "heap" in out:
        # after close only the context (CA certificate, DRBG) should still hold memory
        out["heap"]["after_close"] = heap()[0] - base[0]
    print(json.dumps(out))


main(sys.argv[1:])
