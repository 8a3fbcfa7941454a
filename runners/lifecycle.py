"""Start-up failure handling: a model that cannot load ends the server with a non-zero exit.

The model loads in a background thread so that health endpoints answer (503) while it
loads. When loading fails, BentoML's process supervisor would restart the worker forever
and then exit 0 on shutdown; instead the worker records the reason for its supervisor,
asks it to stop, and the supervisor's exit hook turns the recorded failure into exit
status 3. ``install_exit_hook`` runs where ``service.py`` is imported: in the supervisor
(``bentoml serve``) and in each worker.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

EXIT_STARTUP_FAILED = 3
_SUPERVISOR_ENV = "SEGANY_SUPERVISOR_PID"


def _marker(pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"segany-startup-failed-{pid}"


def install_exit_hook() -> None:
    """Remember this process as the supervisor (first importer wins) and exit non-zero at
    shutdown if a worker reported a start-up failure."""
    os.environ.setdefault(_SUPERVISOR_ENV, str(os.getpid()))
    if os.environ[_SUPERVISOR_ENV] == str(os.getpid()):
        _marker(os.getpid()).unlink(missing_ok=True)
        atexit.register(_exit_if_worker_failed)


def _exit_if_worker_failed() -> None:
    marker = _marker(os.getpid())
    try:
        reason = marker.read_text()
    except OSError:
        return
    marker.unlink(missing_ok=True)
    sys.stderr.write(f"segment-anywhere did not start: {reason}\n")
    sys.stderr.flush()
    logging.shutdown()
    os._exit(EXIT_STARTUP_FAILED)


def fail_startup(reason: str) -> None:
    """Log ``reason``, stop the supervisor (if this is one of its workers), exit non-zero."""
    logger.critical("start-up failed: %s", reason)
    supervisor = os.environ.get(_SUPERVISOR_ENV)
    if supervisor and supervisor.isdigit() and int(supervisor) == os.getppid():
        try:
            _marker(os.getppid()).write_text(reason)
            os.kill(os.getppid(), signal.SIGTERM)
        except OSError:
            logger.exception("could not stop the supervisor")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_STARTUP_FAILED)
