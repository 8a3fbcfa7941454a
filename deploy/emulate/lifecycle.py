"""The emulated instance: the real server process (the image's entrypoint) started, stopped and
measured by the emulator's front.

- :meth:`Instance.ensure_running` starts it when it is not running (a scale-from-zero: the time
  from process start to its ``/readyz`` 200 is the measured cold start);
- :meth:`Instance.stop_if_idle` stops it once no request has come for ``idle_s`` (the front calls
  it; SageMaker real-time never scales to zero, so its front never does);
- with ``memory_mb`` the process runs in a memory cgroup (``bench/memcap.py``, root on Linux);
  where this machine has none, the cap is skipped and the status says why;
- a process that ends on its own is reported as the platform would: an OOM kill (the cgroup's
  OOM count rose) or a crash.

Blocking (subprocess and polling): fronts call it from a worker thread; one lock serialises
starts and stops, so several fronts (tests) may share one instance.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.server import ENTRYPOINT, ServerProcess, free_port
from deploy.limits import SERVERLESS_PING_DEADLINE_S

logger = logging.getLogger(__name__)


class StartFailed(Exception):
    """The server process ended (or never got ready) while starting."""

    def __init__(self, message: str, oom: bool) -> None:
        super().__init__(message)
        self.oom = oom


@dataclass
class ColdStart:
    at: float  # time.time() of the request that paid it
    seconds: float  # process start to /readyz 200
    reason: str  # "first request", "scale from zero", "after a crash", "at emulator start"


@dataclass
class Instance:
    """One server process of the image, as ``platform`` ("sagemaker" or "cloudrun") starts it."""

    platform: str
    env: dict[str, str]
    log_dir: Path
    memory_mb: int | None = None
    sagemaker_mode: str = "realtime"
    ready_timeout_s: float = SERVERLESS_PING_DEADLINE_S
    cold_starts: list[ColdStart] = field(default_factory=list)
    memory_note: str = "no memory cap asked (--memory-mb)"
    oom_kills: int = 0
    crashes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._server: ServerProcess | None = None
        self._cgroup = None
        self._oom_seen = 0
        self._starts = 0
        self.active = 0
        self.last_used = time.monotonic()
        self.state = "stopped"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # --- state --------------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        return self._server.url if self._server is not None and self.state == "running" else None

    def running(self) -> bool:
        with self._lock:
            return self._server is not None and self._server.process is not None and self._server.process.poll() is None

    def begin(self) -> None:
        with self._lock:
            self.active += 1
            self.last_used = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self.active -= 1
            self.last_used = time.monotonic()

    # --- start and stop -----------------------------------------------------------------------

    def _command_and_env(self, port: int) -> tuple[list[str], dict[str, str]]:
        env = {**self.env, "SEGANY_HOST": "127.0.0.1", "BENTOML_DO_NOT_TRACK": "true"}
        if self.platform == "sagemaker":
            return [*ENTRYPOINT, "serve"], {**env, "SAGEMAKER_BIND_TO_PORT": str(port), "SEGANY_SAGEMAKER_MODE": self.sagemaker_mode}
        return list(ENTRYPOINT), {**env, "PORT": str(port), "K_SERVICE": env.get("K_SERVICE", "segany-emulator")}

    def _cgroup_for(self):  # type: ignore[no-untyped-def]
        if self.memory_mb is None:
            return None
        if self._cgroup is None:
            from bench.memcap import MemoryCgroup, cgroup_name

            try:
                self._cgroup = MemoryCgroup(cgroup_name(f"emulate-{id(self)}"), self.memory_mb)
                self.memory_note = f"the server runs in a memory cgroup of {self.memory_mb} MiB (no swap)"
            except OSError as exc:
                self.memory_note = (f"--memory-mb {self.memory_mb} NOT enforced: {exc} (needs root and a writable cgroup "
                                    "memory controller on Linux)")
                logger.warning("%s", self.memory_note)
                return None
        return self._cgroup

    def _oom_since_last_look(self) -> bool:
        if self._cgroup is None:
            return False
        kills = self._cgroup.report()["oom_kills"]
        new = kills > self._oom_seen
        self._oom_seen = kills
        return new

    def ensure_running(self, reason: str | None = None) -> float | None:
        """Start the server unless it runs; the seconds to ready when it started now, else None."""
        with self._lock:
            if self.running() and self.state == "running":
                return None
            if self._server is not None:  # it ended on its own since the last request
                self._reap()
            port = free_port()
            command, env = self._command_and_env(port)
            self._starts += 1
            server = ServerProcess(env, self.log_dir / f"server-{self._starts}.log", command=command, port=port)
            cgroup = self._cgroup_for()
            if cgroup is not None:
                server.command = cgroup.wrap(server.command)
            self.state = "starting"
            started = time.perf_counter()
            server.start()
            self._server = server
            try:
                server.wait_ready(timeout_s=self.ready_timeout_s)
            except (RuntimeError, TimeoutError) as exc:
                server.stop()
                self._server, self.state = None, "stopped"
                oom = self._oom_since_last_look()
                self.oom_kills += oom
                raise StartFailed(str(exc)[-2000:], oom) from None
            seconds = time.perf_counter() - started
            self.state = "running"
            why = reason or ("first request" if not self.cold_starts and self._starts == 1 else "scale from zero")
            self.cold_starts.append(ColdStart(time.time(), seconds, why))
            logger.info("server ready in %.2f s (%s)", seconds, why)
            return seconds

    def died(self) -> str | None:
        """After a failed request: "oom" or "crash" when the process has ended, else None."""
        with self._lock:
            if self._server is None or self.running():
                return None
            time.sleep(0.05)  # let the kernel's OOM count settle
            oom = self._oom_since_last_look()
            self._reap()
            if oom:
                self.oom_kills += 1
                return "oom"
            self.crashes += 1
            return "crash"

    def _reap(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server, self.state = None, "stopped"

    def stop(self) -> None:
        with self._lock:
            self._reap()

    def stop_if_idle(self, idle_s: float) -> bool:
        """Scale to zero: stop the server when nothing has asked for ``idle_s`` seconds."""
        with self._lock:
            if self.state != "running" or self.active or time.monotonic() - self.last_used < idle_s:
                return False
            logger.info("no request for %.1f s: scaling to zero", idle_s)
            self._reap()
            return True

    def close(self) -> None:
        self.stop()
        if self._cgroup is not None:
            self._cgroup.close()

    def status(self) -> dict:
        with self._lock:
            memory: dict = {"limit_mb": self.memory_mb, "note": self.memory_note}
            if self._cgroup is not None:
                memory.update(self._cgroup.report())
            return {
                "state": self.state,
                "pid": self._server.process.pid if self._server is not None and self._server.process else None,
                "url": self.url,
                "in_flight": self.active,
                "starts": self._starts,
                "oom_kills": self.oom_kills,
                "crashes": self.crashes,
                "memory": memory,
                "log": str(self._server.log_path) if self._server is not None else None,
            }
