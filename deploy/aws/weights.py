"""Where a release's weights come from, decided before planning.

- baked into the image (``segany build --bake-weights``): nothing to do;
- a local checkpoint: packaged as model.tar.gz (``segany package-model``) and uploaded to S3
  once per digest (``s3://BUCKET/segany/models/SHA/model.tar.gz``), passed as ModelDataUrl;
- ``s3://.../model.tar.gz``: passed as ModelDataUrl as it is;
- any other ``s3://``, ``https://`` or ``gs://`` checkpoint: fetched by the container at start
  (``SEGANY_CHECKPOINT``; the role needs read access).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploy.plan import Call
from runners.errors import ConfigError


@dataclass(frozen=True)
class Weights:
    model_data_url: str | None = None
    checkpoint_env: str | None = None
    digest: str | None = None  # sha256 of the local file, for the release
    upload: tuple[Call, ...] = ()  # the S3 calls that put model.tar.gz in place (empty when it is there)
    model_type: str | None = None  # read off a local checkpoint

    @property
    def downloaded_at_start(self) -> bool:
        return bool(self.model_data_url or self.checkpoint_env)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(checkpoint: str | None, bucket: str, model_type: str | None, exists: "callable", region: str) -> Weights:
    """``exists(bucket, key)`` -> bool|None (None: the bucket itself is missing)."""
    if checkpoint is None:
        return Weights()
    if checkpoint.startswith("s3://") and checkpoint.endswith(".tar.gz"):
        return Weights(model_data_url=checkpoint)
    if "://" in checkpoint:
        return Weights(checkpoint_env=checkpoint)
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: no such file; give a .pth file, or an s3:// or https:// URI")
    from runners.models import checkpoint_spec  # reads shapes without torch where it can

    spec = checkpoint_spec(path)
    if spec is None or (model_type and spec.name != model_type):
        raise ConfigError(f"--checkpoint {checkpoint} holds {spec.name if spec else 'no known SAM shape'}"
                          f"{', not ' + model_type if model_type else ''}; check the file or --model")
    digest = _sha256(path)
    key = f"segany/models/{digest[:16]}/model.tar.gz"
    calls: list[Call] = []
    found = exists(bucket, key)
    if found is None:
        config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        calls.append(Call("s3", "create_bucket", {"Bucket": bucket, **config}, f"bucket {bucket} for model artifacts"))
    if not found:
        archive = Path(tempfile.mkdtemp(prefix="segany-model-")) / "model.tar.gz"
        calls.append(Call("weights", "package", {"checkpoint": str(path), "out": str(archive), "model_type": spec.name},
                          f"package {path.name} as model.tar.gz"))
        calls.append(Call("s3", "upload_file", {"Filename": str(archive), "Bucket": bucket, "Key": key},
                          f"upload model.tar.gz to s3://{bucket}/{key}"))
    return Weights(model_data_url=f"s3://{bucket}/{key}", digest=digest, upload=tuple(calls), model_type=spec.name)


class Packager:
    """The ``weights`` pseudo-client of a plan: packages a checkpoint (deploy/aws/model_artifact.py)."""

    def package(self, checkpoint: str, out: str, model_type: str) -> dict[str, str]:
        from deploy.aws.model_artifact import package_model

        package_model(checkpoint, Path(out), model_type)
        return {"out": out}
