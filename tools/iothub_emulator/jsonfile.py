"""A JSON document in a file that another process (the CLI) may change: the registry and the
DPS store both keep their state this way. Both hold keys, so the file is private (0600)."""

import json
import os

from .files import write_private


class JsonFile:
    def __init__(self, path):
        self.path = path
        self._stamp = None

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def load_if_changed(self):
        """The document if the file changed since we last read or wrote it, else None."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return None
        with open(self.path) as f:
            data = json.load(f)
        self._stamp = stamp
        return data

    def save(self, data):
        """Write atomically (temporary file, then rename), mode 0600."""
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True))
        self._stamp = self._file_stamp()
