"""SEGANY_ATTENTION=sdpa: the torch encoder's attention in scaled_dot_product_attention, with
SAM's relative-position terms as the additive mask (the default on CUDA; runners/attention.py).

It is SAM's arithmetic up to rounding, so the embedding is held within float32 rounding of
SAM's own encoder and the masks to IoU >= 0.999 on the real photos, point and box prompts,
loaded the way the server loads it. Each check also counts the SDPA calls, so a path that
silently fell back to the exact attention would fail.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from runners import attention
from runners.engine_types import Prompts
from runners.errors import ConfigError
from runners.models import load_sam
from runners.sam import prepare_image, uses_sdpa
from runners.settings import Settings
from runners.specs import get_spec
from runners.torch_loading import load_torch_engine
from tests.photos import PHOTOS, photo_rgb
from tests.test_openvino import PROMPTS, eager_predict, iou


@pytest.fixture
def sdpa_calls(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of the queries handed to scaled_dot_product_attention while the test runs."""
    calls: list[tuple[int, ...]] = []
    original = F.scaled_dot_product_attention

    def counted(q, *args, **kwargs):
        calls.append(tuple(q.shape))
        return original(q, *args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counted)
    return calls


def sdpa_model(checkpoint, heads_per_chunk: int | None = None):
    model = load_sam(get_spec("tiny"), checkpoint, torch.device("cpu"))
    assert attention.use_lean_encoder(model.image_encoder, heads_per_chunk, sdpa=True) == (1, 1)
    return model


def encoder_input(model, names: tuple[str, ...]) -> torch.Tensor:
    """The photos as SamPredictor.set_image hands them to the encoder: (B, 3, 1024, 1024)."""
    transform = ResizeLongestSide(model.image_encoder.img_size)
    return torch.stack([prepare_image(model, transform, photo_rgb(name), torch.device("cpu")).tensor for name in names])


def test_sdpa_embedding_is_sams_up_to_rounding(tiny_checkpoint, reference_model, sdpa_calls):
    model = sdpa_model(tiny_checkpoint)
    batch = encoder_input(reference_model, ("dog", "truck"))
    with torch.inference_mode():
        ours, theirs = model.image_encoder(batch), reference_model.image_encoder(batch)
    # tiny: one windowed block (64x64 tokens padded to 70x70: 25 windows of 14x14 per image) and one
    # global block, both in SDPA, 4-D as the fused kernels need
    assert sorted(sdpa_calls) == [(1, 2 * 2, 64 * 64, 32), (1, 2 * 25 * 2, 14 * 14, 32)]
    assert not torch.equal(ours, theirs)  # really another kernel ...
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)  # ... with SAM's arithmetic


def test_sdpa_chunks_and_batches_give_the_same_embedding(tiny_checkpoint, reference_model, sdpa_calls):
    batch = encoder_input(reference_model, ("dog", "groceries"))
    whole, one_head = sdpa_model(tiny_checkpoint), sdpa_model(tiny_checkpoint, heads_per_chunk=1)
    with torch.inference_mode():
        together = whole.image_encoder(batch)
        chunked = one_head.image_encoder(batch)
        alone = torch.cat([whole.image_encoder(batch[i : i + 1]) for i in range(2)])
    assert (1, 1, 64 * 64, 32) in sdpa_calls  # the global block one head at a time
    torch.testing.assert_close(chunked, together, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)


def test_served_sdpa_masks_equal_eager_fp32(tiny_checkpoint, predictor_for, sdpa_calls):
    settings = Settings(model_type="tiny", checkpoint=str(tiny_checkpoint), device="cpu", encoder="torch",
                        attention="sdpa", cache_dir=tiny_checkpoint.parent / "cache")
    loaded = load_torch_engine(settings, None)
    engine = loaded.engine
    assert (loaded.backend, loaded.precision, engine.attention) == ("torch", "fp32", "sdpa")
    for name in PHOTOS:
        embedding = engine.embed([engine.prepare(photo_rgb(name))])[0]
        for kind, prompt in PROMPTS[name].items():
            prompts = Prompts(
                points=np.array(prompt["points"], dtype=float) if "points" in prompt else None,
                labels=np.array(prompt["labels"]) if "labels" in prompt else None,
                boxes=np.array(prompt["boxes"], dtype=float) if "boxes" in prompt else None,
                multimask=kind == "point",
            )
            ours = engine.predict(embedding, prompts).masks[0]
            theirs = eager_predict(predictor_for(name), kind, prompt)[0]
            assert ours.shape == theirs.shape
            for mine, reference in zip(ours, theirs):
                assert reference.mean() > 0.01, (name, kind)  # a real mask, not two empty ones
                assert iou(mine, reference) >= 0.999, (name, kind)
    assert len(sdpa_calls) >= 2 * len(PHOTOS)


def test_attention_setting_picks_sdpa_on_cuda_and_refuses_it_for_openvino():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert Settings.from_env({}).attention == "auto"
    assert Settings.from_env({"SEGANY_ATTENTION": "SDPA"}).attention == "sdpa"
    with pytest.raises(ConfigError, match="SEGANY_ATTENTION='flash' is not one of auto, exact, sdpa"):
        Settings.from_env({"SEGANY_ATTENTION": "flash"})
    assert [uses_sdpa("auto", device, "torch") for device in (cpu, cuda)] == [False, True]
    assert [uses_sdpa(kind, cpu, "torch") for kind in ("exact", "sdpa")] == [False, True]
    assert not uses_sdpa("exact", cuda, "torch")
    assert not uses_sdpa("auto", cpu, "openvino")
    with pytest.raises(ConfigError, match="set SEGANY_ENCODER=torch"):
        uses_sdpa("sdpa", cpu, "openvino")


def test_sdpa_with_the_default_cpu_encoder_stops_with_the_fix(tiny_checkpoint):
    """SEGANY_ATTENTION=sdpa is the torch encoder's: with the default (OpenVINO) encoder on CPU the
    server must not start as if it were honoured (the torch-free start never reads it)."""
    from runners.pipeline import Pipeline

    pytest.importorskip("openvino")
    settings = Settings(model_type="tiny", checkpoint=str(tiny_checkpoint), device="cpu", attention="sdpa",
                        cache_dir=tiny_checkpoint.parent / "cache")
    with pytest.raises(ConfigError, match="set SEGANY_ENCODER=torch as well"):
        Pipeline(settings).load()


def test_exact_attention_stays_the_default_on_cpu(tiny_checkpoint, sdpa_calls):
    settings = dataclasses.replace(Settings(), model_type="tiny", checkpoint=str(tiny_checkpoint), device="cpu",
                                   encoder="torch", cache_dir=tiny_checkpoint.parent / "cache")
    engine = load_torch_engine(settings, None).engine
    engine.embed([engine.prepare(np.zeros((32, 48, 3), dtype=np.uint8))])
    assert engine.attention == "exact" and sdpa_calls == []
