"""The tensor shapes in a torch checkpoint, read without torch.

When ``SEGANY_MODEL`` is unset the model type is read off the checkpoint's shapes. With torch
that means importing it (4-5 s on two cores, and the torch engine then serves); the torch-free
start (runners/prestart.py) needs the type before anything imports torch. A ``torch.save`` file
is a zip archive whose ``data.pkl`` pickles the state dict: tensors as calls of
``torch._utils._rebuild_tensor_v2(storage, offset, size, ...)``, their bytes in separate
entries. This unpickler maps those calls to their sizes and loads no tensor data, nor any class
but the few a state dict is made of: anything else (an old non-zip file, a pickled model)
raises :class:`UnreadableShapes`, and loading goes the torch way, which reads what torch reads.

Written here rather than taken from a library: safetensors and the like read their own formats,
not torch's pickle, and the point is not to import torch.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

from .specs import ModelSpec, spec_from_shapes

# torch._utils' tensor rebuilders: the size is the third argument of each
_REBUILDERS = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"}


class UnreadableShapes(Exception):
    """Not a zip-format checkpoint of plain tensors; torch can still try."""


class _Shape(tuple):
    """A tensor's size, standing in for the tensor."""


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in _REBUILDERS:
            return lambda storage, offset, size, *rest: _Shape(size)
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *rest: data
        if module == "torch" and (name.endswith("Storage") or name in ("Size", "float32", "bfloat16", "float16")):
            return name  # a storage or dtype named, never built
        raise UnreadableShapes(f"the checkpoint pickles {module}.{name}")

    def persistent_load(self, pid: Any) -> None:
        return None  # a storage's bytes: not read


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in the checkpoint's state dict (or in its ``"model"``
    entry, as some fine-tuning scripts save it). Raises UnreadableShapes."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
            if len(pickles) != 1:
                raise UnreadableShapes(f"{path} holds {len(pickles)} data.pkl entries")
            with archive.open(pickles[0]) as stream:
                state = _ShapeUnpickler(stream).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise UnreadableShapes(f"{path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UnreadableShapes(f"{path} holds a {type(state).__name__}, not a state dict")
    return {key: tuple(value) for key, value in state.items() if isinstance(value, _Shape)}


def spec_of_file(path: Path) -> ModelSpec | None:
    """The registered model whose shape the checkpoint has, read without torch; None when the
    file cannot be read this way or fits no registered shape (the torch loader then decides,
    and names the fix)."""
    try:
        return spec_from_shapes(tensor_shapes(path))
    except UnreadableShapes:
        return None
