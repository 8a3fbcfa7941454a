"""Progress reporting for long transfers (checkpoint downloads), drawn with rich.

Fetchers take a :class:`Progress` so they stay independent of how progress is shown;
:func:`transfer_progress` gives the rich bar used on the console and in logs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Protocol

logger = logging.getLogger(__name__)


class Progress(Protocol):
    def start(self, total_bytes: int | None) -> None:
        """Called once, before the first byte, with the size when it is known."""

    def advance(self, n_bytes: int) -> None:
        """Called after each chunk with the chunk's size."""


class _RichProgress:
    def __init__(self, description: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress as RichBar,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.description = description
        self._bar = RichBar(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self._task: int | None = None
        self.done_bytes = 0

    def start(self, total_bytes: int | None) -> None:
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=total_bytes)

    def advance(self, n_bytes: int) -> None:
        self.done_bytes += n_bytes
        if self._task is not None:
            self._bar.advance(self._task, n_bytes)

    def close(self) -> None:
        self._bar.stop()


@contextlib.contextmanager
def transfer_progress(description: str) -> Iterator[Progress]:
    """A rich progress bar on stderr for one transfer, with a log line at each end."""
    logger.info("%s: starting", description)
    bar = _RichProgress(description)
    try:
        yield bar
    finally:
        bar.close()
    logger.info("%s: %.1f MB done", description, bar.done_bytes / 1e6)
