"""SageMaker's model artifact: a model.tar.gz that SageMaker extracts into /opt/ml/model.

The checkpoint goes at the top of the archive under its official name when it is one of
the official files (the runtime finds it there without settings, and reads the model type
off its shapes).
"""

from __future__ import annotations

import tarfile
from dataclasses import replace
from pathlib import Path

from runners.checkpoints import resolve_checkpoint
from runners.errors import CheckpointError
from runners.models import checkpoint_spec
from runners.specs import MODEL_SPECS, get_spec
from runners.progress import transfer_progress
from runners.settings import Settings


class _Reading:
    """A file object that reports what tarfile reads from it."""

    def __init__(self, file, bar) -> None:  # type: ignore[no-untyped-def]
        self.file, self.bar = file, bar

    def read(self, size: int = -1) -> bytes:
        chunk = self.file.read(size)
        self.bar.advance(len(chunk))
        return chunk


def package_model(source: str, out: Path, model_type: str | None = None) -> Path:
    """Fetch and verify ``source`` (as the runtime would), check its shapes, write ``out``."""
    settings = replace(Settings.from_env(), checkpoint=source, model_type=model_type)
    resolved = resolve_checkpoint(settings, get_spec(model_type or "vit_h"))
    spec = checkpoint_spec(resolved.path)
    if spec is None or (model_type and spec.name != model_type):
        found = spec.name if spec else "no known SAM shape"
        raise CheckpointError(f"{source} holds {found}, not {model_type or 'a SAM model'}; check the file.")
    official = {s.checkpoint_filename for s in MODEL_SPECS.values() if s.checkpoint_filename}
    name = resolved.path.name if resolved.path.name in official else spec.checkpoint_filename or f"sam_{spec.name}.pth"
    out.parent.mkdir(parents=True, exist_ok=True)
    size = resolved.path.stat().st_size
    with tarfile.open(out, "w:gz", compresslevel=1) as archive, resolved.path.open("rb") as f, transfer_progress(f"packing {name}") as bar:
        bar.start(size)
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        archive.addfile(info, _Reading(f, bar))
    return out
