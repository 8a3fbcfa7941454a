"""python -m bench SUITE [...]: run benchmark suites; results go to bench/results/*.json.

Suites: encoder (our encoder against eager torch, ONNX Runtime and OpenVINO), serve
(served overhead, cache speedup, /embed throughput), batching (adaptive batching on/off),
coldstart (start to ready vs the floor, peak RSS), everything (segment-everything against
SamAutomaticMaskGenerator), all; and gpu (the encoder on CUDA against eager SAM and
segment-anything-fast, per batch size; not in all: run it on a GPU, see bench/device/run.sh);
push (the bytes a code-only release pushes to a registry; not in all: needs root, buildah, skopeo
and docker-registry, and builds the image twice); ui (click to mask in headless Chromium, tiny and
vit_b; not in all: needs playwright and chromium).
`python -m bench report` rewrites the README table.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

SUITES = ("encoder", "serve", "batching", "coldstart", "everything")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="+", choices=[*SUITES, "gpu", "push", "ui", "report", "all"])
    parser.add_argument("--model", default="vit_b", help="model shape for serve (random-init weights)")
    parser.add_argument("--images", type=int, default=8, help="images per /embed throughput run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--encoder-models", nargs="+", default=["vit_b", "vit_h"])
    parser.add_argument("--encoder-pairs", nargs="+", default=None,
                        help="re-measure only these pairs (eager onnxruntime openvino_f32 ours_in_process openvino_bf16)")
    parser.add_argument("--coldstart-models", nargs="+", default=["tiny", "vit_b", "vit_h"])
    parser.add_argument("--max-batch", type=int, default=8, help="batching: SEGANY_MAX_BATCH_SIZE with batching on")
    parser.add_argument("--rounds", type=int, default=1, help="batching: images per level = rounds x max(level, 4)")
    parser.add_argument("--gpu-models", nargs="+", default=["vit_b", "vit_h"])
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--gpu-paths", nargs="+", default=None, help="gpu: only these paths (see bench/gpu.py)")
    parser.add_argument("--compile-mode", default="default", help="gpu: torch.compile mode of ours_compiled")
    parser.add_argument("--ui-models", nargs="+", default=["tiny", "vit_b"], help="ui: model shapes served")
    parser.add_argument("--gpu-result", default="gpu", help="gpu: results file name (bench/results/NAME.json)")
    parser.add_argument("--gpu-min-calls", type=int, default=3,
                        help="gpu: timed calls per size (1: a CPU rehearsal of the code, no separate warm-up)")
    args = parser.parse_args()
    # A suite stopped by `timeout` (bench/device/run.sh) stops its servers on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    suites = [*SUITES, "report"] if "all" in args.suites else args.suites
    for suite in suites:
        if suite == "encoder":
            from bench import encoder

            encoder.run(tuple(args.encoder_models), only=tuple(args.encoder_pairs) if args.encoder_pairs else None)
        elif suite == "serve":
            from bench import serve

            serve.run(args.model, args.images, tuple(args.concurrency))
        elif suite == "batching":
            from bench import batching

            batching.run(args.model, tuple(args.concurrency), args.max_batch, args.rounds)
        elif suite == "coldstart":
            from bench import coldstart

            coldstart.run(tuple(args.coldstart_models))
        elif suite == "everything":
            from bench import everything

            everything.run(args.model)
        elif suite == "gpu":
            from bench import gpu

            gpu.run(tuple(args.gpu_models), tuple(args.gpu_batches), args.compile_mode,
                    tuple(args.gpu_paths) if args.gpu_paths else gpu.EAGER_PATHS + gpu.COMPILED_PATHS, args.gpu_result,
                    args.gpu_min_calls)
        elif suite == "push":
            from bench import push

            push.run()
        elif suite == "ui":
            from bench import ui

            ui.run(tuple(args.ui_models))
        elif suite == "report":
            from bench import report

            report.run()


if __name__ == "__main__":
    main()
