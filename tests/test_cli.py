"""The segany command."""

import subprocess
import sys

from segment_anything.build_sam import _build_sam

from tests.conftest import TINY_DIMS


def segany(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True, timeout=300)


def test_weights_tiny_writes_a_deterministic_checkpoint_segment_anything_loads(tmp_path, tiny_checkpoint):
    out = tmp_path / "tiny.pth"
    result = segany("weights", "tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == tiny_checkpoint.read_bytes()
    model = _build_sam(**TINY_DIMS, checkpoint=str(out))
    assert model.image_encoder.patch_embed.proj.weight.shape[0] == TINY_DIMS["encoder_embed_dim"]


def test_weights_for_an_unknown_model_is_refused(tmp_path):
    result = segany("weights", "vit_x", "--out", str(tmp_path / "x.pth"))
    assert result.returncode == 2 and "vit_x" in result.stderr


def test_official_weights_offline_fail_with_the_fix(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "weights", "vit_b", "--out", str(tmp_path / "b.pth")],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "SEGANY_CACHE_DIR": str(tmp_path / "cache"), "HTTPS_PROXY": "http://127.0.0.1:9"},
    )
    assert result.returncode == 2
    assert "SEGANY_MODEL=tiny" in result.stdout + result.stderr
