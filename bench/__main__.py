"""python -m bench SUITE [...]: run benchmark suites; results go to bench/results/*.json.

Suites: serve (served overhead, cache speedup, /embed throughput), coldstart (start to
ready vs the floor, peak RSS), all. `python -m bench report` rewrites the README table.
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="+", choices=["serve", "coldstart", "report", "all"])
    parser.add_argument("--model", default="vit_b", help="model shape for serve (random-init weights)")
    parser.add_argument("--images", type=int, default=8, help="images per /embed throughput run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4])
    parser.add_argument("--coldstart-models", nargs="+", default=["tiny", "vit_b", "vit_h"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    suites = ["serve", "coldstart", "report"] if "all" in args.suites else args.suites
    if "serve" in suites:
        from bench import serve

        serve.run(args.model, args.images, tuple(args.concurrency))
    if "coldstart" in suites:
        from bench import coldstart

        coldstart.run(tuple(args.coldstart_models))
    if "report" in suites:
        from bench import report

        report.run()


if __name__ == "__main__":
    main()
