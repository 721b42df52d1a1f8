"""What devkit's SyncAio facade (the aio client behind the blocking API, used by the
parametrized e2e and lifecycle tests) relies on, checked on the unix port under test:
MicroPython's asyncio.run() returns when its coroutine does and leaves the other tasks
queued, so a task created in one asyncio.run() runs again in the next one (CPython's
asyncio.run cancels them; the facade is for MicroPython only)."""

import json

import mpyrun

PROBE = r"""
import asyncio, json, time
ticks = []
async def background():
    while True:
        ticks.append(time.ticks_ms())
        await asyncio.sleep_ms(10)
async def start():
    asyncio.create_task(background())
async def nap(ms):
    await asyncio.sleep_ms(ms)
asyncio.run(start())
counts = [len(ticks)]
asyncio.run(nap(100))
counts.append(len(ticks))
time.sleep_ms(100)  # no loop running: the task waits
counts.append(len(ticks))
asyncio.run(nap(100))
counts.append(len(ticks))
print("COUNTS", json.dumps(counts))
"""


def test_tasks_outlive_asyncio_run():
    out = mpyrun.run(PROBE, timeout=60)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("COUNTS")]
    assert line, out.stdout + out.stderr
    started, first, idle, second = json.loads(line[0][len("COUNTS ") :])
    assert first > started  # the task ran during the second asyncio.run
    assert idle == first  # and only while a loop ran
    assert second > idle  # and again in the third


def test_facade_runs_coroutines_and_passes_attributes():
    code = r"""
import asyncio, devkit
class Fake:
    on_message = None
    queued = 3
    def plain(self, x):
        return x + 1
    async def coro(self, x):
        await asyncio.sleep_ms(1)
        return x * 2
f = devkit.SyncAio(Fake())
f.on_message = print
print("R", f.plain(1), f.coro(5), f.queued, f.on_message is print, f.aio.on_message is print)
"""
    out = mpyrun.run(code, timeout=60)
    assert "R 2 10 3 True True" in out.stdout, out.stdout + out.stderr
