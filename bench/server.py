"""Start and stop the real server (``bentoml serve``) as a subprocess: for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = [sys.executable, "-m", "deploy.cli", "entrypoint"]  # the image's, run outside it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``bentoml serve service:SegmentAnything`` on a free port, logging to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, command: list[str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **env}
        self.command = command or [
            sys.executable, "-m", "bentoml", "serve", "service:SegmentAnything",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "ServerProcess":
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def wait_ready(self, timeout_s: float = 180) -> "ServerProcess":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout_s} s:\n{self.log_tail()}")

    def wait_exit(self, timeout_s: float = 120) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def log(self) -> str:
        """The whole log: a start-up line must not scroll out behind request lines."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log()[-6000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        if hasattr(self, "_log"):
            self._log.close()

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak resident memory (VmHWM) of the supervisor and each of its descendants, MB."""
        import psutil

        assert self.process is not None
        root = psutil.Process(self.process.pid)
        peaks = {}
        for proc in [root, *root.children(recursive=True)]:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
            peaks[" ".join(proc.cmdline()[1:4]) + f" [{proc.pid}]"] = kb / 1024
        return peaks


def libraries_mapped(pid: int, prefix: str) -> set[str]:
    """Shared objects named ``prefix*`` mapped by process ``pid`` or any of its descendants."""
    import psutil

    root = psutil.Process(pid)
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:  # it ended
            continue
        found |= {name for line in maps.splitlines() if (name := line.rsplit("/", 1)[-1]).startswith(prefix)}
    return found


def entrypoint_process(env: dict[str, str], log_path: Path) -> ServerProcess:
    """The server as the image starts it on Cloud Run (``segany entrypoint``, ``PORT``), on a free port."""
    port = free_port()
    return ServerProcess({**env, "PORT": str(port)}, log_path, command=list(ENTRYPOINT), port=port)
