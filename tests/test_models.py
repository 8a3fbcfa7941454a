"""Model building and loading: our loader gives segment_anything's model, weights assigned
straight from the checkpoint, and wrong files fail with a fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runners.errors import CheckpointError
from runners.models import build_sam, load_sam
from runners.specs import MODEL_SPECS, get_spec
from runners.sam import Prompts, SamEngine
from tests.photos import photo_rgb


def test_builders_match_segment_anything_shapes():
    from segment_anything import sam_model_registry

    for name in ("vit_b",):  # building vit_h/vit_l here would allocate gigabytes for nothing
        ours = build_sam(MODEL_SPECS[name], device="meta").state_dict()
        theirs = {k: v.shape for k, v in sam_model_registry[name]().state_dict().items()}
        assert {k: v.shape for k, v in ours.items()} == theirs


def test_loaded_tiny_equals_segment_anythings_model(tiny_checkpoint, reference_model):
    ours = load_sam(get_spec("tiny"), tiny_checkpoint, torch.device("cpu"))
    reference = reference_model.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert torch.equal(ours.pixel_mean, reference_model.pixel_mean) and torch.equal(ours.pixel_std, reference_model.pixel_std)
    assert not any(p.is_meta for p in ours.parameters())


def test_engine_embedding_and_prediction_equal_the_predictor(tiny_checkpoint, reference_model):
    from segment_anything import SamPredictor

    engine = SamEngine(load_sam(get_spec("tiny"), tiny_checkpoint, torch.device("cpu")), torch.device("cpu"))
    rgb = photo_rgb("groceries")
    [embedding] = engine.embed([engine.prepare(rgb)])
    predictor = SamPredictor(reference_model)
    predictor.set_image(rgb)
    assert torch.equal(embedding.features, predictor.features)
    assert (embedding.original_size, embedding.input_size) == (predictor.original_size, predictor.input_size)
    prompts = Prompts(points=np.array([[300.0, 200.0]]), labels=np.array([1]), multimask=True)
    prediction = engine.predict(embedding, prompts)
    masks, scores, logits = predictor.predict(point_coords=np.array([[300, 200]]), point_labels=np.array([1]))
    np.testing.assert_array_equal(prediction.masks[0], masks)
    np.testing.assert_array_equal(prediction.scores[0], scores)


def test_wrong_model_type_names_the_setting(tiny_checkpoint):
    with pytest.raises(CheckpointError) as caught:
        load_sam(get_spec("vit_b"), tiny_checkpoint, torch.device("cpu"))
    assert "SEGANY_MODEL" in caught.value.message


def test_garbage_file(tmp_path):
    path = tmp_path / "sam.pth"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(CheckpointError, match="not a readable SAM checkpoint"):
        load_sam(get_spec("tiny"), path, torch.device("cpu"))


def test_a_legacy_format_checkpoint_loads_into_memory(tiny_checkpoint, reference_model, tmp_path, caplog):
    """torch < 1.6's format (not a zip) cannot be memory-mapped: it is read into memory instead,
    typed from its shapes, and gives the same model; a file torch cannot read is a CheckpointError."""
    from runners.models import checkpoint_spec

    legacy = tmp_path / "legacy.pth"
    torch.save(torch.load(tiny_checkpoint, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_spec(legacy).name == "tiny"
    model = load_sam(None, legacy, torch.device("cpu"))
    assert model.segany_model_type == "tiny" and "legacy (pre-1.6) format" in caplog.text
    reference = reference_model.state_dict()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in model.state_dict().items())
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(CheckpointError, match="not a readable SAM checkpoint"):
        checkpoint_spec(garbage)


def mapped_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process (Linux /proc/self/maps), if any."""
    for line in open("/proc/self/maps"):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else None
    return None


def test_weights_are_assigned_from_the_memory_mapped_file(tiny_checkpoint):
    model = load_sam(get_spec("tiny"), tiny_checkpoint, torch.device("cpu"))
    for tensor in (model.image_encoder.patch_embed.proj.weight, model.mask_decoder.iou_token.weight):
        # assigned, not copied: the weights live in the checkpoint's mapping, not in fresh memory
        assert mapped_file(tensor.data_ptr()) == str(tiny_checkpoint)


def test_unknown_model_type():
    from runners.errors import ConfigError

    with pytest.raises(ConfigError, match="vit_h"):
        get_spec("vit_x")


def test_the_model_type_is_read_off_the_checkpoint(tiny_checkpoint, tmp_path):
    from runners.models import spec_of

    model = load_sam(None, tiny_checkpoint, torch.device("cpu"))
    assert model.segany_model_type == "tiny"
    state = torch.load(tiny_checkpoint, mmap=True, weights_only=True)
    assert spec_of(state).name == "tiny"
    vit_b_shapes = {k: torch.empty(v.shape, device="meta") for k, v in build_sam(MODEL_SPECS["vit_b"], device="meta").state_dict().items()}
    assert spec_of(vit_b_shapes).name == "vit_b"
    assert spec_of({"something": torch.zeros(1)}) is None
    odd = tmp_path / "odd.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(5, 3, 16, 16)}, odd)
    with pytest.raises(CheckpointError, match="SEGANY_MODEL"):
        load_sam(None, odd, torch.device("cpu"))


def test_lean_encoder_gives_the_same_embedding_bit_for_bit(tiny_checkpoint, reference_model, monkeypatch):
    from runners import attention
    from runners.attention import use_lean_encoder

    # two heads at a time (of 2 images x 2 heads): 2 chunks. Not one: a batch of one head takes another
    # matmul kernel on some CPUs (1.8e-6 off on a Xeon with AMX); the real budget gives 4 heads or more.
    monkeypatch.setattr(attention, "SCORE_BUDGET_BYTES", 2 * 4096 * 4096 * 4)
    lean = load_sam(get_spec("tiny"), tiny_checkpoint, torch.device("cpu"))
    assert use_lean_encoder(lean.image_encoder) == (1, 1)  # tiny: one global block, one windowed (64 -> 70 padded)
    rows = []
    windowed = lean.image_encoder.blocks[0]
    windowed.attn.qkv.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[:-1].numel()))
    windowed.attn.proj.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[:-1].numel()))
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(lean.image_encoder(x), reference_model.image_encoder(x))
    assert rows == [2 * 64 * 64, 2 * 64 * 64]  # qkv and proj ran on the real tokens only, not 2 x 70 x 70
