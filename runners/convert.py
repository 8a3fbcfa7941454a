"""Convert SAM's image encoder to OpenVINO IR: ``python -m runners.convert --checkpoint ... --out DIR``.

Run by the server in a child process the first time a checkpoint is served with the
OpenVINO backend, and by ``segany convert`` ahead of time (for example while building an
image with baked weights). Writes ``image_encoder.xml``/``.bin`` (float32, exactly the
torch encoder's graph, global attention a few heads at a time, windowed blocks' linear layers on
the real tokens only: runners/attention.py) atomically into DIR.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def convert(checkpoint: Path, model_type: str | None, out: Path) -> Path:
    import openvino as ov

    from .attention import use_lean_encoder
    from .converted import IMAGE_SHAPE, write_manifest
    from .models import load_sam
    from .specs import get_spec

    start = time.perf_counter()
    sam = load_sam(get_spec(model_type) if model_type else None, checkpoint, torch.device("cpu"))
    use_lean_encoder(sam.image_encoder)  # also keeps the tracing forward's memory low
    with torch.no_grad():
        model = ov.convert_model(sam.image_encoder, example_input=torch.zeros(IMAGE_SHAPE), input=[IMAGE_SHAPE])
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ov.save_model(model, staging / "image_encoder.xml", compress_to_fp16=False)
    write_manifest(staging, checkpoint=str(checkpoint), model_type=sam.segany_model_type,
                   openvino=ov.__version__, torch=torch.__version__, seconds=round(time.perf_counter() - start, 1))
    shutil.rmtree(out, ignore_errors=True)
    staging.replace(out)
    logger.info("converted %s encoder to %s in %.0f s", sam.segany_model_type, out, time.perf_counter() - start)
    return out / "image_encoder.xml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--model-type", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert(args.checkpoint, args.model_type, args.out)


if __name__ == "__main__":
    main()
