"""Pytest glue for pure-core case modules (host_tests/device/cases_*.py).

install("cases_sas", globals()) adds to the calling test module:
  test_cpython[case]       the case run on CPython
  test_micropython[case]   the same case on the real unix port (the whole module runs once),
                           and its observation (return value) equal to CPython's
install(..., name="fuzz") names them test_fuzz_cpython / test_fuzz_micropython instead.
"""

import json
import sys

import pytest

import mpyrun

DEVICE = str(mpyrun.DEVICE_HELPERS)
if DEVICE not in sys.path:
    sys.path.insert(0, DEVICE)

import coretest  # noqa: E402  (host_tests/device/coretest.py, shared with the device)


def _roundtrip(value):
    return json.loads(json.dumps(value))


def micropython_results(modname, timeout=180, heapsize=None):
    return mpyrun.run_json(
        "import coretest; coretest.main(%r)" % modname, timeout=timeout, heapsize=heapsize
    )


def install(modname, ns, name="", timeout=180, heapsize=None):
    names = coretest.case_names(modname)
    cache = {}

    def mpy_results():
        if "r" not in cache:
            cache["r"] = micropython_results(modname, timeout=timeout, heapsize=heapsize)
        return cache["r"]

    @pytest.mark.parametrize("case", names)
    def test_cpython(case):
        coretest.run_case(modname, case)

    @pytest.mark.parametrize("case", names)
    def test_micropython(case):
        res = mpy_results()
        assert case in res, "case %s did not run on micropython" % case
        r = res[case]
        assert r["ok"], "on micropython: " + r["error"]
        want = _roundtrip(coretest.run_case(modname, case))
        assert r["result"] == want, "micropython and CPython observed different results"

    prefix = "test_" + (name + "_" if name else "")
    test_cpython.__name__ = prefix + "cpython"
    test_micropython.__name__ = prefix + "micropython"
    ns[test_cpython.__name__] = test_cpython
    ns[test_micropython.__name__] = test_micropython
    return names
