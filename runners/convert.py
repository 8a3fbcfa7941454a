"""Convert SAM's image encoder and decoders to OpenVINO IR: ``python -m runners.convert --checkpoint ... --out DIR``.

Run by the server in a child process the first time a checkpoint is served with the
OpenVINO backend, and by ``segany convert`` ahead of time (for example while building an
image with baked weights). Writes ``image_encoder.xml``/``.bin`` (float32, exactly the
torch encoder's graph, global attention one head at a time, windowed blocks' linear layers on
the real tokens only: runners/attention.py), ``prompt_decoder.xml``/``.bin`` (float32, the
prompt encoder and mask decoder from prompts to low-res masks: runners/prompt_decoder.py; with
it a server needs no torch) and ``mask_decoder.xml``/``.bin`` (float32, the decoder's
``predict_masks``: any number of prompts and of tokens per prompt; runners/decoders.py runs it
for segment-everything) atomically into DIR. With ``--int8-calibration
PHOTOS`` the encoder is then quantized to int8 with NNCF (``SEGANY_PRECISION=int8``): its
matrix products take int8 inputs whose ranges were measured on those photos, preprocessed
exactly as served images are.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)
ATTENTION_PRODUCTS = r".*aten::matmul.*"  # q @ k^T and attn @ v (the linear layers are aten::linear)


def convert(checkpoint: Path, model_type: str | None, out: Path, int8_calibration: Path | None = None) -> Path:
    import openvino as ov

    from .attention import CONVERTED_HEADS_PER_CHUNK, use_lean_encoder
    from .calibration import calibration_images, require_nncf
    from .checkpoints import sha256_of_file
    from .converted import DECODER_XML, IMAGE_SHAPE, PROMPT_DECODER_XML, write_manifest
    from .models import load_sam
    from .prompt_decoder import convert_prompt_decoder
    from .specs import get_spec

    images = calibration_images(int8_calibration) if int8_calibration else []
    if images:
        require_nncf()
    start = time.perf_counter()
    sam = load_sam(get_spec(model_type) if model_type else None, checkpoint, torch.device("cpu"))
    use_lean_encoder(sam.image_encoder, CONVERTED_HEADS_PER_CHUNK)  # also keeps the tracing forward's memory low
    with torch.no_grad():
        model = ov.convert_model(sam.image_encoder, example_input=torch.zeros(IMAGE_SHAPE), input=[IMAGE_SHAPE])
    if images:
        model = quantize(model, sam, images)
    else:  # (the int8 graph stays as calibrated and measured)
        fold_constants(model)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ov.save_model(model, staging / "image_encoder.xml", compress_to_fp16=False)
    ov.save_model(convert_decoder(sam), staging / DECODER_XML, compress_to_fp16=False)
    ov.save_model(convert_prompt_decoder(sam), staging / PROMPT_DECODER_XML, compress_to_fp16=False)
    # checkpoint_sha256: the weights' identity where the folder is served without them
    # (runners/converted.py, served_from_folder)
    write_manifest(staging, checkpoint=str(checkpoint), checkpoint_sha256=sha256_of_file(checkpoint),
                   model_type=sam.segany_model_type,
                   weights="int8" if images else "float32", calibration_images=len(images),
                   openvino=ov.__version__, torch=torch.__version__, seconds=round(time.perf_counter() - start, 1))
    shutil.rmtree(out, ignore_errors=True)
    staging.replace(out)
    logger.info("converted %s encoder to %s in %.0f s", sam.segany_model_type, out, time.perf_counter() - start)
    return out / "image_encoder.xml"


def fold_constants(model) -> None:  # type: ignore[no-untyped-def]
    """Fold the graph's constant subgraphs once, here, instead of at every compile. The input's
    shape is fixed, so the shape arithmetic of the windows and the relative positions' coordinates
    are constants; the converter marks its ShapeOf operations to keep them (for reshaping, which
    the encoder never is), the marks are not saved, and the CPU plugin folded them at each start
    (vit_h: 8898 -> 4893 operations; compiling the IR 6-7.6 s -> 4.4 s; the same outputs, as fast)."""
    from openvino import passes

    for op in model.get_ordered_ops():
        info = op.get_rt_info()
        for key in [key for key in info.keys() if key.startswith("DisableConstantFolding")]:
            del info[key]
    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())
    manager.run_passes(model)


class _PredictMasks(torch.nn.Module):
    """``MaskDecoder.predict_masks`` as a module to trace: image_embeddings and image_pe
    (1, 256, 64, 64), sparse prompt embeddings (B, N, 256), dense (B or 1, 256, 64, 64) ->
    masks (B, 4, 256, 256) low-res logits and iou_pred (B, 4), all float32."""

    def __init__(self, mask_decoder: torch.nn.Module) -> None:
        super().__init__()
        self.mask_decoder = mask_decoder

    def forward(self, image_embeddings, image_pe, sparse, dense):  # type: ignore[no-untyped-def]
        return self.mask_decoder.predict_masks(image_embeddings, image_pe, sparse, dense)


def convert_decoder(sam):  # type: ignore[no-untyped-def]
    """The mask decoder as an OpenVINO model with a dynamic prompt count and token count."""
    import openvino as ov

    dim = sam.prompt_encoder.embed_dim
    grid = sam.prompt_encoder.image_embedding_size
    image = torch.zeros(1, dim, *grid)
    example = (image, image, torch.zeros(2, 3, dim), torch.zeros(2, dim, *grid))
    shapes = [ov.PartialShape([1, dim, *grid])] * 2 + [ov.PartialShape([-1, -1, dim]), ov.PartialShape([-1, dim, *grid])]
    with torch.no_grad():
        return ov.convert_model(_PredictMasks(sam.mask_decoder).eval(), example_input=example, input=shapes)


def quantize(model, sam, images: list[Path]):  # type: ignore[no-untyped-def]
    """The converted encoder ``model`` with int8 matrix products, calibrated on ``images``."""
    import nncf
    from segment_anything.utils.transforms import ResizeLongestSide

    from .errors import ConfigError, SegAnyError
    from .inputs import ImageLimits, decode_image
    from .sam import prepare_image
    from .settings import Settings

    transform = ResizeLongestSide(sam.image_encoder.img_size)
    limits = ImageLimits(Settings.max_image_pixels, Settings.max_image_side)

    def encoder_input(path: Path) -> np.ndarray:  # as a served image reaches the encoder
        try:
            rgb = decode_image(path.read_bytes(), limits)
        except SegAnyError as exc:
            raise ConfigError(f"int8 calibration image {path}: {exc.message}") from None
        return prepare_image(sam, transform, rgb, torch.device("cpu")).tensor[None].numpy()

    logger.info("quantizing to int8, calibrated on %d images", len(images))
    # overflow_fix: weights get 7 bits of range, so that on CPUs without VNNI (AVX2's int8 products add
    # pairs into a saturating int16) no sum overflows; without it, masks there fell to IoU 0.83.
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    return nncf.quantize(model, nncf.Dataset(images, encoder_input), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(images), ignored_scope=nncf.IgnoredScope(patterns=[ATTENTION_PRODUCTS], validate=False),
                         advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--model-type", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--int8-calibration", type=Path, default=None, help="quantize to int8, calibrated on these photos")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .errors import SegAnyError

    try:
        convert(args.checkpoint, args.model_type, args.out, args.int8_calibration)
    except SegAnyError as exc:  # its message, the last line on stderr, is what the server reports
        logger.error("%s", exc.message)
        sys.exit(2)


if __name__ == "__main__":
    main()
