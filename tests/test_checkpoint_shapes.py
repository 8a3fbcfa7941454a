"""Reading a checkpoint's tensor shapes without torch (runners/checkpoint_shapes.py), which lets a
server with SEGANY_MODEL unset start torch-free: the shapes equal torch.load's, the registered
type is the one the torch loader finds, and whatever is not a plain zip-format state dict is
left to torch instead of being unpickled (nothing in it runs)."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

from runners.checkpoint_shapes import UnreadableShapes, spec_of_file, tensor_shapes
from runners import models
from runners.models import build_sam, checkpoint_spec, spec_of
from runners.specs import MODEL_SPECS, spec_from_shapes


def torch_shapes(path) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in torch.load(path, map_location="cpu", weights_only=True).items()}


def test_shapes_equal_torch_loads_and_name_the_type(tiny_checkpoint):
    shapes = tensor_shapes(tiny_checkpoint)
    assert len(shapes) > 100 and shapes == torch_shapes(tiny_checkpoint)
    assert spec_of_file(tiny_checkpoint).name == "tiny"


def test_parameters_other_dtypes_and_a_model_wrapper_are_read(tiny_checkpoint, tmp_path):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    module = build_sam(MODEL_SPECS["tiny"])
    module.load_state_dict(state)
    as_parameters = tmp_path / "parameters.pth"
    torch.save(module.to(torch.bfloat16).state_dict(keep_vars=True), as_parameters)  # Parameters, bf16
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {k: v.half() for k, v in state.items()}, "epoch": 3}, wrapped)
    expected = {key: tuple(value.shape) for key, value in state.items()}
    assert tensor_shapes(as_parameters) == expected
    assert tensor_shapes(wrapped) == expected
    assert spec_of_file(wrapped).name == "tiny"


def test_every_registered_shape_is_told_apart():
    for name, spec in MODEL_SPECS.items():
        shapes = {k: tuple(v.shape) for k, v in build_sam(spec, device="meta").state_dict().items()}
        assert spec_from_shapes(shapes).name == name
    assert spec_from_shapes({"something": (1,)}) is None


def test_what_is_not_a_plain_state_dict_is_left_to_torch(tiny_checkpoint, tmp_path):
    legacy = tmp_path / "legacy.pth"  # torch < 1.6's format: not a zip
    torch.save(torch.load(tiny_checkpoint, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    module = tmp_path / "module.pth"  # a pickled model, not its state dict
    torch.save(torch.nn.Linear(2, 2), module)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    for path in (legacy, module, garbage):
        assert spec_of_file(path) is None
    with pytest.raises(UnreadableShapes, match="torch.nn.modules.linear.Linear"):
        tensor_shapes(module)
    assert spec_of(torch.load(legacy, weights_only=True)).name == "tiny"  # torch can, and decides


def test_checkpoint_spec_loads_with_torch_only_what_it_cannot_read(tiny_checkpoint, tmp_path, monkeypatch):
    """A file read without torch is decided there, a shape no model fits included (None)."""
    unknown = tmp_path / "unknown.pth"
    torch.save({"something": torch.zeros(3)}, unknown)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(models.torch, "load", lambda *args, **kwargs: loads.append(args[0]) or real_load(*args, **kwargs))
    assert checkpoint_spec(tiny_checkpoint).name == "tiny" and checkpoint_spec(unknown) is None
    assert loads == []


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"image_encoder.patch_embed.proj.weight": _Payload()}))
    with pytest.raises(UnreadableShapes, match="system"):
        tensor_shapes(path)
    assert not (tmp_path / "pwned").exists()
