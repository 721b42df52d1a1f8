# Dropping the topic builders (topics, pct) while nothing holds them: after a connect
# (iothub.clientx imports it, and connected() unloads it with clientx) and after the first
# telemetry topic with properties (ClientBase._d2c, for that one call through
# errors.explained). A module of its own so that this first send with properties, the
# demo's peak, does not load the connection code for it.
import sys

from .errors import unload


def spare(c):
    """Drop pct and topics (loaded for the token, construction's topic or a telemetry topic)
    while no loaded module holds them: dropping a held one frees nothing, and the next
    import would load a second copy (measured with the old routes module: +4.7 KB with
    three handlers). Once a send has needed a second, different topic with properties,
    topics stays (reloading it for every change of properties, or after every reconnect,
    would churn the heap)."""
    m = sys.modules
    if "iothub.sas" in m or "iothub.dps_topics" in m:  # both hold topics, dps_topics pct
        return
    if "iothub.inbound" not in m and "iothub.mqttpub" not in m:
        unload("pct")
    k = c._tkey
    if (k is None or not k[7]) and "iothub.topicsx" not in m:
        unload("topics")
