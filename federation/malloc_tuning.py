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

A one-shot transfer (``gns get``, ``put``, ``cat``) goes further: one arena, and 64 MiB
kept. With an arena per thread, the 1 MiB buffers its threads hand each other fill extra
arena heaps, which glibc shrinks or unmaps once they empty, so the next burst faults their
pages in afresh (under load a 320 MiB ``get --via`` reserved 9 such heaps and gave back
157 MiB of their pages, against 5 and 63 MiB for a 64 MiB one; keeping 64 MiB with an arena per
thread still left 17 to 47 faults per MiB). So the faults that grow with the file, a 320 MiB
``get --via``'s less a 64 MiB one's, came to -9 to 46 per MiB with the settings above on a
quiet machine (eight runs) and 21 to 57 with two busy processes beside it (four runs); CI
once saw 24. With one arena and 64 MiB kept: -3 to 4 quiet (eight runs), -6 to 8 loaded
(four). A 1 GiB ``get --via`` took 14k to 17k faults against 17k to 39k, 1.35 against 1.42
CPU-s and 1.99 against 2.03 s (medians of five alternated pairs); a 1 GiB ``put --via``
10.2k faults and 1.14 CPU-s either way. Such a process has few threads (its own and gRPC's),
so the one arena is not a lock they wait on, as the figures show.

A FUSE mount (``gns fuse``, and each mount of the CSI driver) keeps 64 MiB too, but keeps
glibc's arenas, which its ``stat`` calls need (:func:`tune_malloc`). With 16 MiB kept, its
read buffers were given back and faulted in again all through a large read: reading a
320 MiB file took 90k to 180k faults (the file is 82k pages). With 64 MiB kept: 0.3k to 8k;
``bench.posix``'s sequential read went from 300 to 382 MiB/s and its write from 230 to 293
(medians of four alternated pairs, every pair better), its ``stat`` figures the same, its
parallel creates 530 against 568 a second (two pairs each way); the mount's RSS after such
a read was 171 to 200 MiB against 125 to 178.

The ``gns`` command tunes every process it becomes (controller, edge agent, FUSE mount, CSI
driver, a one-shot command) by the command it runs (:func:`tune_for_command`); a controller
then also caps its arenas at two. The Python client does not tune the application that
imports it, since the allocator belongs to that application: one that streams large files
can call :func:`tune_malloc` itself.
"""
from __future__ import annotations

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8

KEEP_FREE = 16 << 20
"""How much free memory an arena keeps at its top before it gives the rest back."""
TRANSFER_KEEP_FREE = 64 << 20
"""The same for a one-shot transfer, which ends soon and gives everything back then."""
TRANSFER_COMMANDS = frozenset({"get", "put", "cat"})
"""The ``gns`` commands that stream a file and end: one arena, :data:`TRANSFER_KEEP_FREE`."""
MOUNT_COMMANDS = frozenset({"fuse"})
"""The long-lived ``gns`` commands that stream files for other programs: they keep
:data:`TRANSFER_KEEP_FREE` too, and glibc's arenas (see :func:`tune_malloc`)."""


def tune_for_command(command: str | None) -> bool:
    """What the ``gns`` command's ``main`` asks for, before anything runs: the transfer
    settings for a command of :data:`TRANSFER_COMMANDS`, its kept memory alone for one of
    :data:`MOUNT_COMMANDS`, the general ones for any other (or none: ``gns --help``)."""
    if command in TRANSFER_COMMANDS:
        return tune_malloc(arenas=1, keep_free=TRANSFER_KEEP_FREE)
    if command in MOUNT_COMMANDS:
        return tune_malloc(keep_free=TRANSFER_KEEP_FREE)
    return tune_malloc()


def tune_malloc(*, arenas: int | None = None, keep_free: int = KEEP_FREE) -> bool:
    """Apply the thresholds above to this process (``keep_free`` is glibc's trim
    threshold), and cap its arenas at ``arenas`` if given; False where the C library is not
    glibc (or has no ``mallopt``), which then keeps its own behaviour.

    A long-lived process other than a controller keeps glibc's arenas: with two, a FUSE
    mount served 19% fewer uncached ``stat`` calls a second and 25% fewer after a listing
    (``bench.posix``, two alternated pairs), where its threads' small allocations wait on
    each other."""
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
    settings = [(_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, keep_free)]
    if arenas is not None:
        settings.append((_M_ARENA_MAX, arenas))
    taken = [mallopt(param, value) == 1 for param, value in settings]
    return all(taken)
