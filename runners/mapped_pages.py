"""Give back the resident pages of read-only file mappings that a runtime keeps after loading.

OpenVINO memory-maps the model's weights (the IR's ``.bin``, or the compiled-model blob on
later starts), copies them into its own repacked buffers while it compiles, and keeps the
mapping for the life of the compiled model. Every page it read stays in the process' RSS:
for vit_h that is 2.6 GB of mapped file beside the 2.6 GB repacked copy, so a server
peaked at 6.7 GB, over SageMaker Serverless' 6144 MB.

Those pages are clean copies of the file. ``madvise(MADV_DONTNEED)`` drops them from this
process; a later read faults them in again from the page cache (or the disk), with the same
bytes, so results cannot change; only mappings without write permission are touched. While
a model compiles, :class:`ReleasingMappedPages` does this every 50 ms, so the
file never sits in RSS whole (vit_h encoder alone: peak 5.8 -> 3.3 GB, compile time and
embeddings unchanged). On systems without ``/proc/self/maps`` or ``madvise`` it does nothing.

Why not a library: none wraps this; the standard library's ``mmap.madvise`` only reaches
mappings Python made itself, and OpenVINO's are made in C++.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Iterable

logger = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")
MADV_DONTNEED = 4  # Linux


def _madvise() -> "ctypes._CFuncPtr | None":
    if not sys.platform.startswith("linux") or not MAPS.exists():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_MADVISE = _madvise()


def read_only_mappings(folders: Iterable[Path]) -> list[tuple[int, int, str]]:
    """(start, end, path) of this process' mappings of files under ``folders`` that are not writable."""
    prefixes = [re.escape(os.path.realpath(folder) + os.sep) for folder in folders]
    if not prefixes:
        return []  # (an empty pattern would match every mapping)
    names = re.compile("|".join(prefixes))
    found = []
    try:
        lines = MAPS.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        # Most of the ~800 lines (torch's libraries) name no model file: skip those before
        # splitting. This runs beside the import of torch and holds the GIL while it parses:
        # splitting every line cost 1.5 ms a call, this search 0.3 ms.
        if not names.search(line):
            continue
        fields = line.split(None, 5)  # address perms offset dev inode [path]
        if len(fields) < 6 or "w" in fields[1] or not names.match(fields[5]):
            continue
        start, end = (int(value, 16) for value in fields[0].split("-"))
        found.append((start, end, fields[5]))
    return found


def release_mapped_pages(folders: Iterable[Path]) -> int:
    """Drop the resident pages of read-only mappings of files under ``folders`` from this
    process (they are read again from the file if touched). Returns the bytes advised."""
    if _MADVISE is None:
        return 0
    released = 0
    for start, end, _ in read_only_mappings(folders):
        if _MADVISE(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    return released


class ReleasingMappedPages:
    """``with ReleasingMappedPages([folder]): compile()``: while the block runs, a thread keeps
    releasing the pages of read-only mappings of files under the folders; once more at the end."""

    # Each pass reads /proc/self/maps: about 2 ms of kernel time once torch's ~800 mappings
    # exist, on the core the import of torch wants. Every 50 ms that is 4% of a core; the pages
    # a compile reads in between (50-100 MB) are what the peak RSS carries for it.
    def __init__(self, folders: Iterable[Path], interval_s: float = 0.05) -> None:
        self.folders = [Path(folder) for folder in folders]
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            release_mapped_pages(self.folders)

    def __enter__(self) -> "ReleasingMappedPages":
        if _MADVISE is not None:
            self._thread = threading.Thread(target=self._run, name="segany-release-mapped-pages", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        released = release_mapped_pages(self.folders)
        if released:
            logger.info("released the resident pages of %.0f MB of memory-mapped model files (read again from disk if touched)",
                        released / 2**20)
