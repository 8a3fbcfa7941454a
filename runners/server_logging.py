"""Our records from before the service is constructed, held until BentoML has named the worker.

A BentoML worker imports the service, then names itself (``server_context``: the
``[entry_service:NAME:1]`` of each log line) and constructs the service. BentoML reads that name
once, at the first line it formats, and keeps it: a line of ours formatted earlier (the prestart
thread's, runners/prestart.py, which starts as the service module is imported) would leave every
later line of the process nameless (``[:1]``). So ``hold`` keeps our records from the early
start on, and ``release``, as the service is constructed (``take_prestart``), hands them to
BentoML's handlers.
"""

from __future__ import annotations

import logging

OURS = ("runners", "deploy")


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_held = _Held()


def use_info_level() -> None:
    """Ours report progress at INFO (BentoML's root logger keeps WARNING)."""
    for name in OURS:
        logging.getLogger(name).setLevel(logging.INFO)


def hold() -> None:
    """Keep our records until ``release``."""
    for name in OURS:
        logger = logging.getLogger(name)
        if _held not in logger.handlers:
            logger.addHandler(_held)
            logger.propagate = False


def release() -> None:
    """What was held, and all that follows, through the configured handlers."""
    for name in OURS:
        logger = logging.getLogger(name)
        if _held in logger.handlers:
            logger.removeHandler(_held)
            logger.propagate = True
    held, _held.records = _held.records, []
    for record in held:
        logging.getLogger(record.name).handle(record)
