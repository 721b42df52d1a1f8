"""Connection strings: the same cases on CPython and the unix port."""

import corerun

corerun.install("cases_connstr", globals())
