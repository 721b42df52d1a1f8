"""Files that hold secrets (device keys, private keys, the admin token): written atomically and
readable by the owner only (0600), whatever the umask, the mode of the file being replaced, or
a temporary file left behind by a crash."""

import os

PRIVATE = 0o600


def write_private(path, data):
    """Write bytes or str to path: a temporary file in the same directory, chmod 0600 before
    the first byte, then renamed over path."""
    if isinstance(data, str):
        data = data.encode()
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)  # O_CREAT's mode does not apply to a file that already exists
        f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        f.write(data)
    os.replace(tmp, path)
