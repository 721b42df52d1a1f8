# DPS registration for asyncio (iothub.aio.register): the blocking ProvisioningClient's
# conversation (provisioning.ProvisioningClient._steps, on the pure dps_topics/dps_replies
# steps) driven over an alink.ALink, so the loop keeps running while DPS is asked and polled.
import asyncio

from . import dps_topics as dt
from .asession import read_until
from .clock import ticks_add, ticks_diff, ticks_ms
from .errors import ConfigError, ConnectionLost, Timeout


async def register(pc, timeout_ms=None):
    """Register pc (a provisioning.ProvisioningClient) and wait for the assignment without
    blocking the loop. Returns a ProvisioningResult; raises as pc.register() does."""
    from .alink import check

    check()
    if pc.transport != "mqtt" or pc.proxy is not None:
        raise ConfigError(
            "iothub.aio.register speaks MQTT over TLS only: use ProvisioningClient.register() "
            "(before the loop starts) for WebSockets or a proxy"
        )
    if timeout_ms is None:
        timeout_ms = pc.timeout_ms
    try:
        return await asyncio.wait_for_ms(_register(pc, timeout_ms), timeout_ms)
    except asyncio.TimeoutError:
        raise Timeout("DPS: no assignment within the %d ms timeout" % timeout_ms)
    except MemoryError:
        raise ConnectionLost("DPS registration ran out of memory (the link is closed)")


async def _register(pc, timeout_ms):
    from .alink import ALink
    from .asession import open_session, subscribe
    from .provisioning import SESSION_BUFFERS, _log_to
    from .session import Session

    deadline = ticks_add(ticks_ms(), timeout_ms)
    pc.stats = {"requests": 0, "polls": 0, "retries": 0, "waits_ms": []}
    s = Session(*SESSION_BUFFERS)
    s.link = link = ALink()
    s.owner = pc
    _log_to(pc._log, 1, "DPS: connecting to %s:%d as %s" % (pc.host, pc.port, pc.registration_id))
    ok = False
    try:
        await open_session(
            s,
            pc.host,
            pc.port,
            pc._context(),
            pc.endpoint,
            pc.registration_id,
            dt.username(pc.id_scope, pc.registration_id),
            pc._password(),
            pc.keepalive,
            True,  # DPS treats every session as clean
            None,
        )
        await subscribe(s, [dt.RES_SUB])
        steps = pc._steps(s, timeout_ms, deadline)
        step = next(steps)
        while True:
            if link.pending is not None:
                await link.drain()
            # the conversation asks for the next reply (None) or a delay (ms)
            if step is None:
                try:
                    left = max(ticks_diff(deadline, ticks_ms()), 1)
                    await asyncio.wait_for_ms(
                        read_until(s, lambda: pc._reply is not None, "DPS reply"), left
                    )
                except asyncio.TimeoutError:
                    step = steps.throw(Timeout("no DPS reply in time"))
                    continue
            else:
                await _idle(s, step)
            try:
                step = steps.send(None)
            except StopIteration:
                ok = True
                return pc._result
    finally:
        s.close(clean=ok)
        from .provisioning import is_own

        if is_own(pc._ctx):
            pc._ctx = None  # a one-off link: do not keep the TLS context around


def _never():
    return False


async def _idle(s, delay_ms):
    # Wait on the link, as the blocking client does: PINGREQ goes out when due and a dropped
    # link is noticed; replies to older requests arriving meanwhile are dropped.
    from . import mqtt

    lc = s.lc
    until = ticks_add(ticks_ms(), delay_ms)
    while True:
        now = ticks_ms()
        left = ticks_diff(until, now)
        if left <= 0:
            return
        a = lc.keepalive(now)
        if a == 2:  # lifecycle's PING
            s.write(mqtt._short(s.tx, 0xC0, 0, "PINGREQ"))
            lc.ping_at = now
            continue
        if a == 3:  # lifecycle's DEAD
            s.link.close()
            raise ConnectionLost(lc.why)
        try:
            await asyncio.wait_for_ms(read_until(s, _never, "DPS reply"), min(left, lc.wait))
        except asyncio.TimeoutError:
            pass
