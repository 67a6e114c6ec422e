"""How every ``gns`` process asks glibc to keep the 1 MiB chunk buffers it frees.

Streaming a file allocates and frees several chunk-sized buffers per message, on many
threads. With glibc's defaults:

* freed memory goes back to the kernel soon (a buffer above the mmap threshold is unmapped
  when freed; the heap's top is trimmed once twice the largest freed chunk is free), so the
  next chunks fault their pages in again. A 1 GiB ``gns get`` took 52k to 257k minor
  faults here (median 130k of six runs), 1.56 CPU-s and 2.14 s by the median; through a
  tunnel (``--via``) 137k, 1.65 CPU-s and 2.58 s (issue 14). A forwarder, before
  controllers were tuned, took 110k to 370k per GiB;
* every thread gets an arena of its own, and the freed memory stays fragmented across them:
  a forwarder's RSS grew by hundreds of MiB over a 1 GiB transfer.

So chunk buffers come from the heap (mmap only above 32 MiB), an arena gives memory back
only when 16 MiB are free at its top, and a controller has at most two arenas. The same
``gns get`` then takes 18k to 24k faults (8k of them start-up). The CPU it saves is less
clear: 1.35 against 1.40 CPU-s direct and 1.67 against 1.73 through the tunnel (medians of
three alternated pairs); with its arenas capped at two as well, six pairs had given 1.23
against 1.56 and 1.39 against 1.65. A forwarder's RSS stays bounded (the 1 GiB
bounded-memory test).

The ``gns`` command sets the thresholds for every process it becomes (controller, edge
agent, FUSE mount, CSI driver, a one-shot ``put`` or ``get``); a controller also caps its
arenas. The Python client does not set them in the application that imports it, since the
allocator belongs to that application: one that streams large files can call
:func:`tune_malloc` itself.
"""
from __future__ import annotations

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_malloc(*, arenas: int | None = None) -> bool:
    """Apply the thresholds above to this process, and cap its arenas at ``arenas`` if
    given (a controller: many threads moving chunks); False where the C library is not glibc
    (or has no ``mallopt``), which then keeps its own behaviour.

    Other processes keep glibc's arenas: with two, a FUSE mount served 19% fewer uncached
    ``stat`` calls a second and 25% fewer after a listing (``bench.posix``, two alternated
    pairs), where its threads' small allocations wait on each other."""
    import ctypes

    try:
        # The symbols this process already has (libc among them): no library search, which
        # would run ldconfig in a subprocess on every command.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # mallopt returns 1 on success; glibc's maximum mmap threshold on 64-bit is 32 MiB.
    # Each setting is asked for even if one before it was refused.
    settings = [(_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 16 << 20)]
    if arenas is not None:
        settings.append((_M_ARENA_MAX, arenas))
    taken = [mallopt(param, value) == 1 for param, value in settings]
    return all(taken)
