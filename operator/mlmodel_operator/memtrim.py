"""Give memory that a burst of work freed back to the system.

At start-up the operator lists every MLModel, Deployment and Service it owns and
reconciles every model at once; glibc's allocator keeps most of what that freed, so the
resident size stays near the start-up peak. ``malloc_trim`` returns the free pages; at
1,000 models it took a fresh operator from 222 to about 201 MiB (benchmarks/README.md,
"Operator at fleet scale"). Where the C library has no ``malloc_trim`` (musl), nothing
is done. It reaches Python's small objects only where they come from the C library too
(``PYTHONMALLOC=malloc``, which the operator's image sets): pymalloc keeps each arena
while one object in it lives.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

TRIM_EVERY: Final = 30.0  # seconds


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> None:
        trim(0)

    return call


async def trim_periodically(every: float = TRIM_EVERY) -> None:
    """Trim every ``every`` seconds, in a thread (it holds the allocator's lock for a few
    milliseconds), until cancelled."""
    trim = malloc_trim()
    if trim is None:
        log.info("no malloc_trim in this C library: freed memory is not returned early")
        return
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(trim)
