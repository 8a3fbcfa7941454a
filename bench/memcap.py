"""Run the server inside a memory cgroup capped at SageMaker Serverless' largest size.

Peak RSS (VmHWM) counts file-backed pages, such as OpenVINO's memory-mapped weights, that
the kernel may drop and reread under pressure; a cap is the honest test of fitting: the
server starts in a cgroup whose limit is 6144 MiB (page cache included, no swap), serves a
request, and the cgroup's OOM count stays zero. Needs a writable cgroup memory controller
(root on cgroup v1 or v2); elsewhere the result says it was skipped and why.

Page cache is charged to the cgroup that first reads a page, so the files the server reads
(checkpoint, converted encoder, compiled blob) are first evicted from the page cache
(``posix_fadvise(DONTNEED)``): the server then pays for them inside its cap, as in a fresh VM.
"""

from __future__ import annotations

import os
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """A fresh memory cgroup with ``limit_mb`` (no swap beyond it); removed on close."""

    def __init__(self, name: str, limit_mb: int) -> None:
        limit = str(limit_mb * 2**20)
        if (V1 / "memory.limit_in_bytes").exists():
            self.path, self.v1 = V1 / name, True
            self.path.mkdir(exist_ok=True)
            (self.path / "memory.limit_in_bytes").write_text(limit)
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(limit)
        elif (V2 / "cgroup.controllers").exists() and "memory" in (V2 / "cgroup.controllers").read_text():
            self.path, self.v1 = V2 / name, False
            self.path.mkdir(exist_ok=True)
            (self.path / "memory.max").write_text(limit)
            (self.path / "memory.swap.max").write_text("0")
        else:
            raise OSError("no writable cgroup memory controller")
        self.limit_mb = limit_mb

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` started inside this cgroup (a shell joins it, then execs the command)."""
        procs = self.path / "cgroup.procs"
        return ["/bin/sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *command]

    def report(self) -> dict:
        if self.v1:
            oom = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
            return {"limit_mb": self.limit_mb, "max_usage_mb": int((self.path / "memory.max_usage_in_bytes").read_text()) / 2**20,
                    "limit_hits": int((self.path / "memory.failcnt").read_text()), "oom_kills": int(oom.get("oom_kill", 0))}
        events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
        peak = self.path / "memory.peak"
        return {"limit_mb": self.limit_mb, "max_usage_mb": int(peak.read_text()) / 2**20 if peak.exists() else None,
                "limit_hits": int(events.get("max", 0)), "oom_kills": int(events.get("oom_kill", 0))}

    def close(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def files_under(*roots: Path) -> list[Path]:
    """Every file under ``roots`` (a root may be a file itself; a missing one holds none)."""
    return [path for root in roots
            for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()))]


def evict_from_page_cache(*roots: Path) -> int:
    """Drop the cached pages of every file under ``roots``; returns how many files."""
    paths = files_under(*roots)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return len(paths)


def cgroup_name(label: str) -> str:
    return f"segany-bench-{label}-{os.getpid()}"
