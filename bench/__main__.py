"""python -m bench SUITE [...]: run benchmark suites; results go to bench/results/*.json.

Suites: encoder (our encoder against eager torch, ONNX Runtime and OpenVINO), serve
(served overhead, cache speedup, /embed throughput), batching (adaptive batching on/off),
coldstart (start to ready vs the floor, peak RSS), everything (segment-everything against
SamAutomaticMaskGenerator), all. `python -m bench report` rewrites the README table.
"""

from __future__ import annotations

import argparse
import logging

SUITES = ("encoder", "serve", "batching", "coldstart", "everything")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="+", choices=[*SUITES, "report", "all"])
    parser.add_argument("--model", default="vit_b", help="model shape for serve (random-init weights)")
    parser.add_argument("--images", type=int, default=8, help="images per /embed throughput run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--encoder-models", nargs="+", default=["vit_b", "vit_h"])
    parser.add_argument("--encoder-pairs", nargs="+", default=None,
                        help="re-measure only these pairs (eager onnxruntime openvino_f32 ours_in_process openvino_bf16)")
    parser.add_argument("--coldstart-models", nargs="+", default=["tiny", "vit_b", "vit_h"])
    args = parser.parse_args()
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

            batching.run(args.model)
        elif suite == "coldstart":
            from bench import coldstart

            coldstart.run(tuple(args.coldstart_models))
        elif suite == "everything":
            from bench import everything

            everything.run(args.model)
        elif suite == "report":
            from bench import report

            report.run()


if __name__ == "__main__":
    main()
