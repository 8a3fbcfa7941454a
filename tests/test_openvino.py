"""The default CPU path: the image encoder and mask decoder in OpenVINO, converted once per checkpoint.

Not bit-identical to torch (another runtime sums in another order), so the bar is the
performance issue's: masks with IoU >= 0.999 against eager fp32 SamPredictor on the real
photos, for point and box prompts, and embeddings within float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from bench.server import ServerProcess, libraries_mapped
from runners.converted import ConvertedEncoder, compile_decoder, converted_encoder
from runners.decoders import OpenVINOMaskDecoder
from runners.encoders import OpenVINOEncoder, TorchEncoder
from runners.models import load_sam
from runners.specs import get_spec
from tests.client import array, b64, ok, photo_b64, result_masks, result_scores
from tests.conftest import converted_cache_in, server_env
from tests.photos import PHOTOS, photo_rgb, small_photo_png, small_photo_rgb
from tests.test_everything import OPEN, assert_instances_equal

pytest.importorskip("openvino")

PROMPTS = {
    "dog": {"point": {"points": [[400, 260]], "labels": [1]}, "box": {"boxes": [[150, 60, 650, 520]]}},
    "groceries": {"point": {"points": [[200, 300]], "labels": [1]}, "box": {"boxes": [[100, 100, 500, 450]]}},
    "truck": {"point": {"points": [[500, 375]], "labels": [1]}, "box": {"boxes": [[425, 600, 700, 875]]}},
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def eager_predict(predictor: SamPredictor, kind: str, prompt: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SamPredictor's answer to one of PROMPTS (a point gets three masks, as the server gives it)."""
    return predictor.predict(
        point_coords=np.array(prompt["points"]) if "points" in prompt else None,
        point_labels=np.array(prompt["labels"]) if "labels" in prompt else None,
        box=np.array(prompt["boxes"][0]) if "boxes" in prompt else None,
        multimask_output=kind == "point",
    )


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tiny_conversion, tmp_path_factory):
    return converted_encoder(converted_cache_in(tiny_conversion, tmp_path_factory.mktemp("ov-cache")), tiny_checkpoint, None, "tiny")


def test_conversion_is_cached(converted, tiny_checkpoint):
    assert converted.xml.is_file() and converted.xml.with_suffix(".bin").is_file()
    mtime = converted.xml.stat().st_mtime_ns
    again = converted_encoder(converted.xml.parents[2], tiny_checkpoint, None, "tiny")
    assert again == converted and again.xml.stat().st_mtime_ns == mtime  # not converted twice


def test_openvino_embeddings_match_torch(converted, tiny_checkpoint, reference_model):
    encoder = OpenVINOEncoder.from_converted(converted, "fp32")
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    reference = TorchEncoder(reference_model.image_encoder, torch.device("cpu"), None)(x)
    ours = encoder(x)
    assert ours.shape == (2, 256, 64, 64) and ours.dtype == torch.float32
    assert (ours - reference).abs().max() <= 1e-4 * reference.abs().max()


def test_the_converted_encoder_attends_one_head_at_a_time(converted):
    """Global attention converts one head per chunk (runners.attention.CONVERTED_HEADS_PER_CHUNK):
    each chunk is one fused attention kernel, and a head's relative-position term stays in cache
    (vit_b bf16: 1.06 -> 0.91 s an image against 4 heads a chunk, the torch path's budget)."""
    import openvino as ov

    spec = get_spec("tiny")
    (global_block,) = spec.encoder_global_attn_indexes
    products = [op for op in ov.Core().read_model(converted.xml).get_ops() if op.get_type_name() == "MatMul"
                and f"blocks.{global_block}/aten::matmul" in op.get_friendly_name()]
    assert len(products) == 2 * spec.encoder_num_heads  # q @ k^T and attn @ v for each head on its own


def test_the_converted_encoder_leaves_nothing_for_a_compile_to_fold(converted):
    """Constant subgraphs are folded at conversion (runners.convert.fold_constants), not at each
    compile, and the windowed blocks' padding (the bias, the qkv of a zero token) is two strips,
    never the whole padded grid sliced (vit_h: 75 MB a block). Compiling vit_h's IR: 10-13 -> 4.4 s."""
    import openvino as ov

    spec = get_spec("tiny")
    tokens, qkv = 1024 // 16, 3 * spec.encoder_embed_dim
    pad = -tokens % 14  # segment_anything's windows are 14 tokens a side
    ops = ov.Core().read_model(converted.xml).get_ops()
    foldable = [op.get_friendly_name() for op in ops if op.get_type_name() not in ("Constant", "Parameter")
                and all(op.input_value(i).get_node().get_type_name() == "Constant" for i in range(op.get_input_size()))]
    assert foldable == [] and not [op for op in ops if op.get_type_name() in ("ShapeOf", "Broadcast")]
    shapes = [tuple(op.get_output_partial_shape(0).to_shape()) for op in ops if op.get_type_name() == "Constant"]
    assert sorted(shape for shape in shapes if len(shape) == 4 and shape[-1] == qkv and shape[1:3] != (1, 1)) == [
        (1, pad, tokens + pad, qkv), (1, tokens, pad, qkv)]  # the bottom and right strips


@pytest.mark.parametrize("prompts, tokens, dense", [(1, 2, "no mask"), (7, 3, "no mask"), (3, 2, "mask input")])
def test_openvino_decoder_matches_torch(converted, reference_model, prompts, tokens, dense):
    """predict_masks converted: the same low-res logits and IoU predictions as torch's, for one
    prompt and several, with the expanded no-mask embedding (sent once) and with a mask input's."""
    compiled = compile_decoder(converted)
    assert compiled is not None
    decoder, reference = OpenVINOMaskDecoder(compiled), reference_model.mask_decoder
    generator = torch.Generator().manual_seed(prompts)
    dim = reference_model.prompt_encoder.embed_dim
    image = torch.randn(1, dim, 64, 64, generator=generator)
    image_pe = reference_model.prompt_encoder.get_dense_pe()
    sparse = torch.randn(prompts, tokens, dim, generator=generator)
    if dense == "no mask":
        dense_embeddings = reference_model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(prompts, -1, 64, 64)
    else:
        dense_embeddings = torch.randn(prompts, dim, 64, 64, generator=generator)
    with torch.inference_mode():
        masks, iou_pred = reference.predict_masks(image, image_pe, sparse, dense_embeddings)
        ours_masks, ours_iou = decoder(image, image_pe, sparse, dense_embeddings)
    assert ours_masks.shape == masks.shape == (prompts, 4, 256, 256) and ours_iou.shape == iou_pred.shape
    assert (ours_masks - masks).abs().max() <= 1e-5 * masks.abs().max()
    assert (ours_iou - iou_pred).abs().max() <= 1e-5
    assert ((ours_masks > 0) == (masks > 0)).float().mean() >= 0.9999


def test_a_folder_without_a_converted_decoder_keeps_the_torch_decoder(converted, tmp_path, caplog):
    older = tmp_path / "older"
    older.mkdir()
    for suffix in (".xml", ".bin"):
        (older / f"image_encoder{suffix}").symlink_to(converted.xml.with_suffix(suffix))
    with caplog.at_level("INFO", logger="runners.converted"):
        assert compile_decoder(ConvertedEncoder(older / "image_encoder.xml", None)) is None
    assert "decoder runs in torch" in caplog.text and "convert again" in caplog.text


def test_the_server_never_loads_the_encoder_weights_into_torch(tiny_checkpoint):
    model = load_sam(get_spec("tiny"), tiny_checkpoint, torch.device("cpu"), with_encoder=False)
    assert sum(p.numel() for p in model.image_encoder.parameters()) == 0
    assert model.image_encoder.img_size == 1024  # all SAM's predictor code needs of it


@pytest.fixture(scope="module")
def openvino_server(tiny_checkpoint, tiny_conversion, tmp_path_factory, _moto_server, _fake_gcs_server):
    tmp = tmp_path_factory.mktemp("ov-server")
    cache = converted_cache_in(tiny_conversion, tmp / "cache")  # converting at start-up: tests/test_precisions.py
    env = server_env(tiny_checkpoint, cache, _moto_server, _fake_gcs_server.endpoint)
    env["SEGANY_ENCODER"] = ""  # the default: auto, which is OpenVINO on CPU
    server = ServerProcess(env, tmp / "server.log").start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.mark.parametrize("name", PHOTOS)
def test_default_path_masks_match_eager_fp32(openvino_server, reference_model, name):
    import httpx

    start_log = openvino_server.log_path.read_text()
    assert "openvino encoder" in start_log and "openvino decoder" in start_log and "no torch)" in start_log
    assert "compiling the OpenVINO encoder and decoder" in start_log  # runners/prestart.py
    predictor = SamPredictor(reference_model)
    predictor.set_image(photo_rgb(name))
    with httpx.Client(base_url=openvino_server.url, timeout=120) as client:
        embed = ok(client.post("/embed", json={"image": photo_b64(name)}))
        np.testing.assert_allclose(array(embed["embedding"]), predictor.features.numpy(), atol=2e-4, rtol=0)
        for kind, prompt in PROMPTS[name].items():
            body = ok(client.post("/segment", json={"image_id": embed["image_id"], **prompt}))
            masks, scores, _ = eager_predict(predictor, kind, prompt)
            ours = result_masks(body["results"][0])
            assert ours.shape == masks.shape
            for mine, theirs in zip(ours, masks):
                assert iou(mine, theirs) >= 0.999, (name, kind)
            np.testing.assert_allclose(result_scores(body["results"][0]), scores, atol=1e-3)


def test_the_default_server_never_loads_torch(openvino_server):
    """The default server serves prompts, embeddings and segment-everything (crops included) with
    no torch in any of its processes (runners/converted_engine.py, runners/mask_generator.py)."""
    import httpx

    with httpx.Client(base_url=openvino_server.url, timeout=300) as client:
        embed = ok(client.post("/embed", json={"image": b64(small_photo_png("groceries"))}))
        ok(client.post("/segment", json={"image_id": embed["image_id"], "boxes": [[10, 10, 200, 200]]}))
        body = ok(client.post("/segment_everything", json={"image_id": embed["image_id"], "points_per_side": 2,
                                                            "crop_n_layers": 1, **OPEN}))
    assert body["instances"] and libraries_mapped(openvino_server.process.pid, "libtorch") == set()


def test_default_path_segment_everything_matches_the_generator(openvino_server, reference_model):
    """Segment-everything on the torch-free engine, served: the generator's instances on the same
    weights (eager fp32 encoder and decoder; the OpenVINO encoder's embedding differs in its last
    bits, so assert_instances_equal's tolerances)."""
    import httpx

    params = {"points_per_side": 5, **OPEN}
    body = ok(httpx.post(f"{openvino_server.url}/segment_everything", timeout=300,
                         json={"image": b64(small_photo_png("dog")), **params}))
    reference = SamAutomaticMaskGenerator(reference_model, output_mode="coco_rle", **params).generate(small_photo_rgb("dog"))
    assert_instances_equal(body["instances"], reference)


def test_chunked_attention_converts_to_one_concat_not_a_scatter_per_chunk():
    """Global attention a few heads at a time (runners/attention.py) converts to chunks joined by a
    Concat: a ScatterNDUpdate per chunk, what writing into a preallocated tensor traces to, runs
    with OpenVINO's generic kernel (8 ms of a vit_b global block in bf16). Same output as SAM's."""
    import openvino as ov
    from segment_anything.modeling.image_encoder import Attention

    from runners import attention

    torch.manual_seed(0)
    module = Attention(dim=32, num_heads=4, use_rel_pos=True, input_size=(8, 8)).eval()
    with torch.no_grad():
        module.rel_pos_h.normal_(), module.rel_pos_w.normal_()

    class Lean(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = module

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.attn.proj(attention.attend(self.attn, self.attn.qkv(x), heads_per_chunk=1))  # 4 chunks

    x = torch.randn(1, 8, 8, 32)
    with torch.no_grad():
        model = ov.convert_model(Lean().eval(), example_input=x)
        expected = module(x)
    ops = {op.get_type_name() for op in model.get_ops()}
    assert "ScatterNDUpdate" not in ops and "Concat" in ops
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
