"""IoT Plug and Play helpers (iothub/pnp.py): the same cases on CPython and the unix port."""

import corerun

corerun.install("cases_pnp", globals())
