"""MQTT 3.1.1 codec: the same cases on CPython and the unix port, a bounded fuzz on both,
and a heap-locked hot path on the unix port."""

import corerun

corerun.install("cases_mqtt", globals())

corerun.install("cases_mqtt_fuzz", globals(), name="fuzz")
