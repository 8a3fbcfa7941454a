"""Regenerate the README's benchmark table from bench/results/*.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from bench.common import RESULTS, ROOT, logger

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _rows_serve(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    model, ratios, served, direct = result["model"], result["ratios"], result["served"], result["direct"]
    yield (f"prompt on a cached image, HTTP vs `predict` ({model}, 3 masks)",
           f"{served['point']['median_s'] * 1e3:.0f} ms vs {direct['point']['median_s'] * 1e3:.0f} ms",
           f"{ratios['cached_point_prompt_vs_predict']:.2f}x", result["goals"]["cached_point_prompt_vs_predict"])
    yield (f"first vs second prompt on one image ({model})",
           f"{served['first_prompt_s']:.2f} s vs {served['point']['median_s'] * 1e3:.0f} ms",
           f"{ratios['first_vs_second_prompt_speedup']:.0f}x faster", result["goals"]["first_vs_second_prompt_speedup"])
    for level, value in served["embed_images_per_s"].items():
        key = f"embed_c{level}_vs_set_image_loop"
        yield (f"`/embed` at concurrency {level} vs a `set_image` loop ({model})",
               f"{value:.3f} vs {direct['set_image_images_per_s']:.3f} img/s",
               f"{ratios[key]:.2f}x", result["goals"].get(key, ""))


def _rows_coldstart(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    for model, figures in result["models"].items():
        yield (f"start to ready vs floor ({model}, {figures['checkpoint_mb']:.0f} MB checkpoint)",
               f"{figures['ready_s']:.1f} s vs {figures['floor_s']:.1f} s", f"{figures['ready_vs_floor']:.2f}x", "")
        yield (f"peak RSS after one request ({model})", f"{figures['peak_rss_mb_total']:.0f} MB",
               "under 6144 MB" if figures["under_serverless_memory"] else "OVER 6144 MB",
               "< 6144 MB" if model == "vit_h" else "")


ROWS = {"serve": _rows_serve, "coldstart": _rows_coldstart}


def table() -> str:
    lines = ["| measure | ours vs baseline | ratio | goal | conditions |", "|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        rows = ROWS.get(result["suite"].split("-")[0])
        if rows is None:
            continue
        c = result["conditions"]
        where = f"{c['cores']} cores, torch {c['torch']}, {c['date']} (`{path.relative_to(ROOT)}`)"
        for name, figures, ratio, goal in rows(result):
            lines.append(f"| {name} | {figures} | {ratio} | {goal} | {where} |")
    return "\n".join(lines)


def run(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    block = f"{START}\n{table()}\n{END}"
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
    logger.info("README benchmark table regenerated from %s", RESULTS)
