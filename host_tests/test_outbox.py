"""The offline queue: bounded, ordered, drop policy counted. Same cases on both runtimes."""

import pytest

import mpyrun
from iothub.outbox import Outbox

CASES = r"""
from iothub.outbox import Outbox
out = []
q = Outbox(3)
for pid in (1, 2, 3, 4):
    q.add(pid, "t", b"x%d" % pid)
out.append([e[0] for e in q.entries()])
out.append(q.dropped)
out.append(q.ack(3))
out.append(q.ack(3))
out.append([e[0] for e in q.entries()])
r = Outbox(2, "reject")
r.add(1, "t", b"a"); r.add(2, "t", b"b")
out.append(r.add(3, "t", b"c") is None)
out.append(len(r))
out.append(r.has(2))
out.append(r.oldest_sent())
r.entries()[1][3] = 7
out.append(r.oldest_sent())
"""

EXPECTED = [[2, 3, 4], 1, True, False, [2, 4], True, 2, True, None, 7]


def run_cases():
    ns = {}
    exec(CASES, ns)
    return ns["out"]


def test_outbox_cpython():
    assert run_cases() == EXPECTED


def test_outbox_unix_port():
    got = mpyrun.run_json(CASES + "\nimport json\nprint(json.dumps(out))")
    assert got == EXPECTED


def test_outbox_rejects_bad_config():
    with pytest.raises(ValueError, match="policy"):
        Outbox(4, "drop-everything")
    with pytest.raises(ValueError, match="at least 1"):
        Outbox(0)
