"""Loading's torch-free part, started as early as the worker can.

Compiling the converted OpenVINO encoder takes seconds (vit_h: 3-4 s from its cached blob, most
of it repacking weights). It needs neither torch nor segment_anything, and OpenVINO releases the
GIL while it compiles, so it runs on a thread while the worker goes on starting. ``prestart``
resolves the checkpoint (download, digest check), finds or converts the IR, and compiles the
encoder and the prompt decoder; ``Pipeline.load`` takes the results where it would otherwise
make them. With the prompt decoder converted too (the default), that is all of loading, and the
server never imports torch (runners/converted_engine.py); otherwise the worker imports torch and
loads the torch engine meanwhile (on two cores, vit_h measured 8-11 s one after the other, 6.3 s
together).

In a BentoML worker it starts as ``service.py`` is imported (``start_in_worker``), half a second
before the service is constructed: BentoML builds its app in between, on one core, while the
compile has the other. The image's one-process worker (deploy/worker.py) starts it sooner still,
before BentoML's own imports (1.3 s earlier); the service's import then finds it started.

It starts only when the plan is certain without torch: the OpenVINO encoder (``SEGANY_ENCODER``
auto or openvino, with openvino installed, and not ``SEGANY_ATTENTION=sdpa``, the torch
encoder's, which loading then refuses with the fix), a CPU (``SEGANY_DEVICE=cpu``, or auto on a machine
without an NVIDIA driver, where torch cannot see CUDA either) and precision fp32, bf16 or int8.
Otherwise ``prestart`` returns None and loading runs step by step, as it always does for CUDA.
With ``SEGANY_MODEL`` unset the type is read off the resolved checkpoint's shapes without torch
(runners/checkpoint_shapes.py: a SageMaker model artifact, say); a file that cannot be read so
leaves ``compiled`` None, and the torch loader decides.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .checkpoint_shapes import spec_of_file
from .checkpoints import ResolvedCheckpoint, resolve_checkpoint
from .converted import OPENVINO_PRECISIONS, compile_for, openvino_available, served_from_folder, torch_available
from .server_logging import hold, release
from .settings import Settings
from .specs import get_spec

logger = logging.getLogger(__name__)

NVIDIA_DRIVER_PATHS = (Path("/proc/driver/nvidia"), Path("/dev/nvidiactl"))


class Prestart:
    """The checkpoint and the compiled OpenVINO encoder and decoder, being made on a background thread.

    ``checkpoint`` and ``compiled`` are futures: ``result()`` waits, and raises what the thread
    raised (a CheckpointError, for instance), so failures end the start as they always did.
    """

    def __init__(self, settings: Settings, precision: str) -> None:
        self.precision = precision  # "fp32", "bf16" or "int8": what the encoder is compiled for
        self.model_type = settings.model_type  # SEGANY_MODEL, or read off the checkpoint before ``compiled`` is set
        self.started_at = time.monotonic()
        self.checkpoint: Future[ResolvedCheckpoint] = Future()
        self.compiled: Future[Any] = Future()  # runners.converted.CompiledParts, or None: the type is unknown
        self._settings = settings
        self._thread = threading.Thread(target=self._run, name="segany-prestart", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        settings = self._settings
        try:
            from_folder = served_from_folder(settings)  # the converted folder alone, when it is all we need
            if from_folder is not None:
                checkpoint, self.model_type = from_folder
            else:  # with SEGANY_MODEL unset, as the torch loader resolves it: vit_h's name and download
                checkpoint = resolve_checkpoint(settings, get_spec(settings.model_type or "vit_h"))
        except BaseException as exc:  # noqa: BLE001 - handed to the loader, which reports it
            self.checkpoint.set_exception(exc)
            self.compiled.set_exception(exc)
            return
        self.checkpoint.set_result(checkpoint)
        try:
            if self.model_type is None:
                spec = spec_of_file(checkpoint.path)
                if spec is None:
                    self.compiled.set_result(None)
                    return
                self.model_type = spec.name
                logger.info("the checkpoint is %s-shaped (SEGANY_MODEL unset)", spec.name)
            self.compiled.set_result(compile_for(settings, checkpoint, self.model_type, self.precision))
        except BaseException as exc:  # noqa: BLE001
            self.compiled.set_exception(exc)


_STARTED: list[Prestart | None] = []  # the worker's early prestart, until the service takes it


def start_in_worker(settings: Settings, worker_index: int | None) -> None:
    """Start now if this is a BentoML worker (``bentoml.server_context.worker_index`` is set
    before the worker imports the service; never in ``bentoml serve``'s supervisor)."""
    if worker_index is not None and not _STARTED:
        hold()  # its lines wait for the service's construction (runners/server_logging.py)
        _STARTED.append(prestart(settings))


def take_prestart(settings: Settings) -> Prestart | None:
    """The prestart begun by ``start_in_worker``, once; else one started now. Called as the
    service is constructed, when BentoML has named the worker: the held log lines go out."""
    release()
    early = _STARTED.pop() if _STARTED else prestart(settings)
    if early is not None:  # logged here: an early start may come before logging is configured
        logger.info("compiling the OpenVINO encoder and decoder (started %.1f s ago)",
                    time.monotonic() - early.started_at)
    return early


def nvidia_driver_present() -> bool:
    return any(path.exists() for path in NVIDIA_DRIVER_PATHS)


def prestart(settings: Settings) -> Prestart | None:
    """Start the torch-free half of loading now, or None when its plan needs torch to decide."""
    if settings.encoder == "torch" or settings.attention == "sdpa" or settings.precision not in OPENVINO_PRECISIONS:
        return None
    if settings.device == "cuda" or (settings.device == "auto" and nvidia_driver_present() and torch_available()):
        return None  # without torch (a baked cpu image on a GPU host) auto can only mean the CPU
    if not openvino_available():
        return None  # auto falls back to torch; openvino reports the missing package at load
    return Prestart(settings, OPENVINO_PRECISIONS[settings.precision])
