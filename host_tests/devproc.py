"""An interactive device on the unix port: the test reads its lines and acts in between.

Device scripts are strings run with `micropython -c`; `CFG` (a dict) is prepended, and the
helper module host_tests/device/devkit.py builds clients from it.
"""

import queue
import subprocess
import threading
import time

import mpyrun


class DeviceProcess:
    def __init__(self, body, cfg, heapsize=None, extra_path=()):
        code = "CFG = %r\n" % (cfg,) + body
        cmd = [mpyrun.micropython_binary()]
        if heapsize:
            cmd += ["-X", "heapsize=%s" % heapsize]
        cmd += ["-c", code]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=mpyrun.mpy_env(extra_path),
            cwd=str(mpyrun.ROOT),
        )
        self.lines = []
        self._q = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def expect(self, prefix, timeout=20):
        """Wait for a line starting with prefix; return the rest of it."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "device did not print %r in %ss; output:\n%s" % (prefix, timeout, self.output)
                )
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("device exited before %r; output:\n%s" % (prefix, self.output))
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def wait(self, timeout=30):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                "device did not exit in %ss; output:\n%s" % (timeout, self.output)
            ) from None
        self._t.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self._t.join(5)

    @property
    def output(self):
        return "\n".join(self.lines)
