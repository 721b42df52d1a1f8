"""A real HTTP CONNECT proxy for the tests and `make demo TRANSPORT=websockets`: Debian's tinyproxy
(installed by `make setup`), started on a free loopback port with its own configuration in a
directory of the caller's (a temporary one).

    with Tinyproxy(tmp_path, auth=("alice", "s3cret"), connect_ports=[443]) as p:
        ... device uses proxy=("127.0.0.1", p.port, "alice", "s3cret") ...
        p.connects()   # ["127.0.0.1:PORT", ...] CONNECT requests tinyproxy logged
"""

import os
import re
import socket
import subprocess
import time

TINYPROXY = "/usr/bin/tinyproxy"
_REQUEST = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Tinyproxy:
    def __init__(self, directory, auth=None, connect_ports=None):
        if not os.path.exists(TINYPROXY):
            raise AssertionError("tinyproxy is not installed: run `make setup` (apt package)")
        self.dir = str(directory)
        self.auth = auth
        self.connect_ports = connect_ports
        self.port = None
        self.proc = None
        self.log_path = os.path.join(self.dir, "tinyproxy.log")

    def start(self):
        for _attempt in range(3):  # a free port can be taken between probing and binding
            self.port = _free_port()
            lines = [
                "Port %d" % self.port,
                "Listen 127.0.0.1",
                "Timeout 30",
                "LogLevel Connect",
                "MaxClients 20",
                "Allow 127.0.0.1",
                "DisableViaHeader Yes",
            ]
            if self.auth:
                lines.append("BasicAuth %s %s" % self.auth)
            for p in self.connect_ports or ():
                lines.append("ConnectPort %d" % p)
            conf = os.path.join(self.dir, "tinyproxy.conf")
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [TINYPROXY, "-d", "-c", conf], stdout=self._log, stderr=self._log
            )
            if self._wait_port():
                return self
            self.stop()
        raise AssertionError("tinyproxy did not start:\n" + self.log())

    def _wait_port(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def connects(self):
        """host:port of every CONNECT request tinyproxy logged, in order."""
        return _REQUEST.findall(self.log())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
