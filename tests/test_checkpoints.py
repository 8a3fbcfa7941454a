"""Checkpoint resolution: local files, directories, SageMaker's model dir, downloads over
http, s3 and gs with progress and sha256, the cache, and the errors that name a fix."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from runners.checkpoints import resolve_checkpoint
from runners.errors import CheckpointError
from runners.models import write_checkpoint
from runners.specs import get_spec
from runners.settings import Settings

TINY = get_spec("tiny")


class Recorder:
    """A progress factory that records what fetchers report."""

    def __init__(self) -> None:
        self.totals: list[int | None] = []
        self.bytes = 0

    def __call__(self, description: str):
        import contextlib

        recorder = self

        class Bar:
            def start(self, total: int | None) -> None:
                recorder.totals.append(total)

            def advance(self, n: int) -> None:
                recorder.bytes += n

        return contextlib.nullcontext(Bar())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_type="tiny", cache_dir=tmp_path / "cache", sagemaker_model_dir=tmp_path / "no-sagemaker")


@pytest.fixture(scope="module")
def tiny_bytes(tiny_checkpoint: Path) -> bytes:
    return tiny_checkpoint.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_tiny_default_is_written_once_into_the_cache(settings, tiny_bytes):
    first = resolve_checkpoint(settings, TINY)
    assert first.path.parent == settings.cache_dir / "checkpoints" and first.source == "tiny"
    assert first.path.read_bytes() == tiny_bytes  # deterministic: the same bytes as `segany weights tiny`
    mtime = first.path.stat().st_mtime_ns
    assert resolve_checkpoint(settings, TINY).path.stat().st_mtime_ns == mtime


def test_local_file_directory_and_file_url(settings, tmp_path, tiny_checkpoint):
    assert resolve_checkpoint(replace(settings, checkpoint=str(tiny_checkpoint)), TINY).path == tiny_checkpoint
    assert resolve_checkpoint(replace(settings, checkpoint=f"file://{tiny_checkpoint}"), TINY).path == tiny_checkpoint
    folder = tmp_path / "model"
    (folder / "nested").mkdir(parents=True)
    (folder / "nested" / "weights.pth").write_bytes(tiny_checkpoint.read_bytes())
    (folder / "README.txt").write_text("not a checkpoint")
    assert resolve_checkpoint(replace(settings, checkpoint=str(folder)), TINY).path == folder / "nested" / "weights.pth"


def test_sagemaker_model_dir_is_used_when_no_checkpoint_is_set(settings, tmp_path, tiny_checkpoint):
    model_dir = tmp_path / "opt-ml-model"
    model_dir.mkdir()
    (model_dir / "sam_tiny.pth").write_bytes(tiny_checkpoint.read_bytes())
    resolved = resolve_checkpoint(replace(settings, sagemaker_model_dir=model_dir), TINY)
    assert resolved.path == model_dir / "sam_tiny.pth"


def test_directory_with_several_checkpoints_asks_which(settings, tmp_path, tiny_checkpoint):
    for name in ("a.pth", "b.pt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(CheckpointError, match="SEGANY_CHECKPOINT"):
        resolve_checkpoint(replace(settings, checkpoint=str(tmp_path)), TINY)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no .pth"):
        resolve_checkpoint(replace(settings, checkpoint=str(empty)), TINY)


def test_missing_file_and_unknown_scheme(settings):
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(replace(settings, checkpoint="/nowhere/sam.pth"), TINY)
    assert "no such file" in caught.value.message and "SEGANY_MODEL=tiny" in caught.value.message
    with pytest.raises(CheckpointError, match="unsupported scheme"):
        resolve_checkpoint(replace(settings, checkpoint="ftp://host/sam.pth"), TINY)


def test_local_sha256_is_checked(settings, tiny_checkpoint, tiny_bytes):
    good = replace(settings, checkpoint=str(tiny_checkpoint), checkpoint_sha256=sha(tiny_bytes))
    assert resolve_checkpoint(good, TINY).sha256 == sha(tiny_bytes)
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(replace(good, checkpoint_sha256="0" * 64), TINY)
    assert sha(tiny_bytes) in caught.value.message and "SEGANY_CHECKPOINT_SHA256" in caught.value.message


def test_http_download_is_verified_cached_and_shows_progress(settings, local_http, tiny_bytes):
    url = local_http.add("/weights/sam_tiny.pth", tiny_bytes)
    wanted = replace(settings, checkpoint=url, checkpoint_sha256=sha(tiny_bytes))
    progress = Recorder()
    first = resolve_checkpoint(wanted, TINY, progress=progress)
    assert first.path.read_bytes() == tiny_bytes and first.sha256 == sha(tiny_bytes)
    assert progress.totals == [len(tiny_bytes)] and progress.bytes == len(tiny_bytes)
    assert first.path.is_relative_to(settings.cache_dir)
    second = resolve_checkpoint(wanted, TINY, progress=Recorder())
    assert second.path == first.path and local_http.hits("/weights/sam_tiny.pth") == 1


def test_http_download_with_the_wrong_digest_is_refused_and_not_kept(settings, local_http, tiny_bytes):
    url = local_http.add("/weights/sam_tiny.pth", tiny_bytes)
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(replace(settings, checkpoint=url, checkpoint_sha256="1" * 64), TINY, progress=Recorder())
    assert "expected " + "1" * 64 in caught.value.message
    assert not list(settings.cache_dir.rglob("*.pth")) and not list(settings.cache_dir.rglob("*.part"))


def test_unreachable_and_failing_downloads_name_the_offline_fix(settings, local_http):
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(replace(settings, checkpoint="http://127.0.0.1:9/sam.pth"), TINY, progress=Recorder())
    assert "could not download" in caught.value.message and "SEGANY_MODEL=tiny" in caught.value.message
    url = local_http.add("/gone.pth", b"", status=404)
    with pytest.raises(CheckpointError, match="HTTP 404"):
        resolve_checkpoint(replace(settings, checkpoint=url), TINY, progress=Recorder())


def test_s3_and_gcs_downloads(settings, moto_s3, fake_gcs, tiny_bytes):
    uri = moto_s3.put("segany-models", "sam/tiny.pth", tiny_bytes)
    progress = Recorder()
    resolved = resolve_checkpoint(replace(settings, checkpoint=uri, checkpoint_sha256=sha(tiny_bytes)), TINY, progress=progress)
    assert resolved.path.read_bytes() == tiny_bytes and progress.bytes == len(tiny_bytes)
    fake_gcs.put("segany-models", "sam/tiny.pth", tiny_bytes)
    gs = resolve_checkpoint(replace(settings, checkpoint="gs://segany-models/sam/tiny.pth"), TINY, progress=Recorder())
    assert gs.path.read_bytes() == tiny_bytes and gs.path != resolved.path
    with pytest.raises(CheckpointError):
        resolve_checkpoint(replace(settings, checkpoint="s3://segany-models/missing.pth"), TINY, progress=Recorder())


def test_official_urls_have_known_digests():
    from runners.specs import MODEL_SPECS, OFFICIAL_DIGESTS

    for name in ("vit_h", "vit_l", "vit_b"):
        spec = MODEL_SPECS[name]
        assert spec.checkpoint_url.startswith("https://dl.fbaipublicfiles.com/segment_anything/sam_" + name)
        assert len(OFFICIAL_DIGESTS[spec.checkpoint_url]) == 64


def test_write_checkpoint_is_deterministic(tmp_path, tiny_bytes):
    assert write_checkpoint(TINY, tmp_path / "again.pth").read_bytes() == tiny_bytes
    assert write_checkpoint(TINY, tmp_path / "other.pth", seed=1).read_bytes() != tiny_bytes
