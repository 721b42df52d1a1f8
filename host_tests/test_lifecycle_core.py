"""The lifecycle core's rules (iothub/lifecycle.py): the same table-driven cases on CPython and
on the unix port."""

import corerun

corerun.install("cases_lifecycle", globals())
