"""Backoff maths: the same cases on CPython and the unix port."""

import corerun

corerun.install("cases_backoff", globals())
