"""The one-process server: BentoML's service worker, serving a socket the entrypoint bound.

``python -m deploy.worker SERVICE --fd N ...`` takes the arguments of
``python -m _bentoml_impl.worker.service`` (what ``bentoml serve``'s supervisor runs in each
worker) and runs it, with one difference: a SIGTERM ends the process with status 0. uvicorn
drains in-flight requests on SIGTERM and then raises the signal again for whoever handled it
before; under ``bentoml serve`` that is the supervisor's business, here it would end the process
by the signal. The handler installed first turns it, and a SIGTERM that arrives before uvicorn
listens for it (while the service module is imported), into exit status 0. It ends the process
as the signal would have, without the interpreter's finalization: the server is done by then,
and finalizing (torch, OpenVINO, module teardown) took 2-3 s here and once kept the image's
PID 1 alive for over 40 s after its last line.

It also starts compiling the OpenVINO encoder (runners/prestart.py) before BentoML's own
imports, 1.3 s sooner than the service's import would: the compile is what a vit_h start
waits for last.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

BENTOML_WORKER = "_bentoml_impl.worker.service"


def _exit_cleanly(signum: int, frame: object) -> None:
    logging.shutdown()  # flush the server's last lines
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def start_early() -> None:
    """Start the prestart now (the service's import takes it over, as under ``bentoml serve``).

    BentoML applies its server logging config before it imports the service, and that config
    disables every logger that exists by then: ours, made by the imports below, would go quiet
    for the life of the process (the prestart's lines and every later line of its modules).
    So the config keeps existing loggers enabled; ours are held until the service is
    constructed either way (runners/server_logging.py).
    """
    from runners.errors import SegAnyError
    from runners.prestart import start_in_worker
    from runners.server_logging import use_info_level
    from runners.settings import Settings

    try:
        settings = Settings.from_env()
    except SegAnyError:
        return  # the service's import reports it, with the exit status of a failed start
    use_info_level()
    start_in_worker(settings, worker_index=1)
    from bentoml._internal.log import SERVER_LOGGING_CONFIG

    SERVER_LOGGING_CONFIG["disable_existing_loggers"] = False


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_cleanly)
    start_early()
    from _bentoml_impl.worker.service import main as bentoml_worker

    bentoml_worker(prog_name=BENTOML_WORKER)


if __name__ == "__main__":
    main()
