"""The TLS error table: the same cases on CPython and the unix port."""

import corerun

corerun.install("cases_tlserrors", globals())
