# Heap discipline of the WebSocket link on the unix port: WebSocket.write() (frame header,
# masking, one write) and readinto() (frames decoded into the caller's buffer) run under
# micropython.heap_lock(), where any allocation raises MemoryError. The socket is a tiny fake
# at the seam: write(buf, off, n) counts bytes; readinto() replays a recorded stream of server
# frames. Prints one JSON line with the findings.

import gc
import json

import micropython

from iothub import websocket, wsproto


class FakeSock:
    def __init__(self, stream):
        self.stream = stream
        self.pos = 0
        self.written = 0
        self.writes = 0

    def write(self, buf, off, n):
        self.written += n
        self.writes += 1
        return n

    def readinto(self, buf):
        n = len(self.stream) - self.pos
        if n > len(buf):
            n = len(buf)
        if n <= 0:
            return None
        wsproto.copy(buf, 0, self.stream, self.pos, n)
        self.pos += n
        return n


def main(n=60):
    pub = b"\x30\x12\x00\x03a/b" + b"x" * 13  # a small PUBLISH from the hub
    frames = b""
    for _ in range(n):
        frames += bytes([0x82, len(pub)]) + pub
    sock = FakeSock(frames)
    w = websocket.WebSocket(sock, None, None, 1024, 32768)
    packet = bytearray(200)
    rxbuf = bytearray(512)
    w._next_key()  # the first draw of masking keys (256 bytes, 64 frames) outside the lock
    got = 0
    step = "start"
    ok = 0
    gc.collect()
    micropython.heap_lock()
    try:
        for _ in range(n):
            step = "write"
            w.write(packet)
            step = "readinto"
            k = w.readinto(rxbuf, 100)  # at most 100 bytes: several calls per chunk
            if k:
                got += k
            ok += 1
        step = "drain"
        while True:
            k = w.readinto(rxbuf, 100)
            if not k:
                break
            got += k
        step = "done"
    except MemoryError:
        pass
    finally:
        micropython.heap_unlock()
    print(
        json.dumps(
            {
                "stopped_at": step,
                "iterations": ok,
                "writes": sock.writes,
                "bytes_written": sock.written,
                "bytes_read": got,
                "viper": wsproto.mask is not wsproto.mask_py,
            }
        )
    )
