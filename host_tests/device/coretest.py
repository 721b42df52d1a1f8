# A tiny test runner for the pure core that runs unchanged on CPython and on the MicroPython
# unix port (like MicroPython's own tests/: one source, both runtimes).
#
# A case module (cases_*.py next to this file) defines functions named test_*; each raises
# on failure and may return a JSON-able value (an "observation"). The pytest side
# (host_tests/corerun.py) runs every case on CPython, runs the whole module once on the
# unix port via main(), and checks that each case passed there too and returned the same
# observation on both runtimes.

import json


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def raises(exc, fn, *args, **kw):
    """Call fn; it must raise exc (or a subclass). Returns the exception's message."""
    try:
        fn(*args, **kw)
    except exc as e:
        return str(e)
    except Exception as e:
        raise AssertionError(
            "expected %s, got %s: %s" % (exc.__name__, type(e).__name__, e)
        ) from None
    raise AssertionError("expected %s, nothing was raised" % exc.__name__)


def has(msg, sub, what=""):
    if sub.lower() not in msg.lower():
        raise AssertionError("%s: %r does not mention %r" % (what, msg, sub))


class Rng:
    """xorshift32: the same pseudo-random sequence on CPython and MicroPython."""

    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 1

    def u32(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.u32() % n if n > 0 else 0

    def bytes(self, n):
        b = bytearray(n)
        for i in range(n):
            b[i] = self.u32() & 0xFF
        return bytes(b)


def case_names(modname):
    mod = __import__(modname)
    names = [n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n))]
    names.sort()
    return names


def run_case(modname, name):
    mod = __import__(modname)
    return getattr(mod, name)()


def main(modname, only=None):
    """Run every case of a module; print one JSON line {case: {ok, error, result}}."""
    out = {}
    for name in case_names(modname):
        if only and name not in only:
            continue
        try:
            r = run_case(modname, name)
            out[name] = {"ok": True, "error": None, "result": r}
        except Exception as e:
            out[name] = {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "result": None}
    print(json.dumps(out))
