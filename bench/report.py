"""Regenerate the README's benchmark table from bench/results/*.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from bench.common import RESULTS, ROOT, logger

ISA_NAMES = {"amx_bf16": "AVX-512 and AMX", "avx512_bf16": "AVX-512 with bf16", "avx512f": "AVX-512, no bf16",
             "avx2": "AVX2 only"}
# (label, server, its paired ratio against bare OpenVINO bf16)
PRECISIONS = (("fp32 (default)", "ours_served", None), ("bf16", "ours_served_bf16", "vs_openvino_bf16"),
              ("int8", "ours_served_int8", "int8_vs_openvino_bf16"))


def _rows_serve(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    model, ratios, served, direct = result["model"], result["ratios"], result["served"], result["direct"]
    yield (f"prompt on a cached image, HTTP vs `predict` ({model}, 3 masks)",
           f"{served['point']['median_s'] * 1e3:.0f} ms vs {direct['point']['median_s'] * 1e3:.0f} ms",
           f"{ratios['cached_point_prompt_vs_predict']:.2f}x", result["goals"]["cached_point_prompt_vs_predict"])
    yield (f"first vs second prompt on one image ({model})",
           f"{served['first_prompt_s']:.2f} s vs {served['point']['median_s'] * 1e3:.0f} ms",
           f"{ratios['first_vs_second_prompt_speedup']:.0f}x faster", result["goals"]["first_vs_second_prompt_speedup"])
    if "embed_cached_npy_vs_json" in ratios:
        yield (f"`/embed` of a cached image, `.npy` vs JSON, decoded by the client ({model})",
               f"{served['embed_cached_npy']['median_s'] * 1e3:.0f} ms vs {served['embed_cached_json']['median_s'] * 1e3:.0f} ms",
               f"{ratios['embed_cached_npy_vs_json']:.2f}x faster", "")
    for level, value in served["embed_images_per_s"].items():
        key = f"embed_c{level}_vs_set_image_loop"
        yield (f"`/embed` at concurrency {level} vs a `set_image` loop ({model})",
               f"{value:.3f} vs {direct['set_image_images_per_s']:.3f} img/s",
               f"{ratios[key]:.2f}x", result["goals"].get(key, ""))
        if "in_process_images_per_s" in direct:
            yield (f"`/embed` at concurrency {level} vs our engine looped in-process ({model})",
                   f"{value:.3f} vs {direct['in_process_images_per_s']:.3f} img/s",
                   f"{ratios[f'embed_c{level}_vs_in_process_loop']:.2f}x", "")


def _rows_coldstart(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    medians = f", medians of {result['rounds']}" if "rounds" in result else ""
    for model, figures in result["models"].items():
        model = model if "(" in model else f"{model} (full warm-up)"
        yield (f"start to ready vs floor ({model}, {figures['checkpoint_mb']:.0f} MB checkpoint)",
               f"{figures['ready_s']:.1f} s vs {figures['floor_s']:.1f} s{medians}", f"{figures['ready_vs_floor']:.2f}x", "<= 1.3x")
        if "runtime_floor_s" in figures:
            yield (f"start to ready vs runtime floor: openvino imported, converted weights read ({model})",
                   f"{figures['ready_s']:.1f} s vs {figures['runtime_floor_s']:.1f} s", f"{figures['ready_vs_runtime_floor']:.2f}x", "")
        if not figures.get("rss_row", True):
            continue  # the same server as the defaults' row
        yield (f"peak RSS after one request ({model})", f"{figures['peak_rss_mb_total']:.0f} MB",
               "under 6144 MB" if figures["under_serverless_memory"] else "OVER 6144 MB",
               "< 6144 MB" if model.startswith("vit_h") else "")
    for name, run in result.get("memory_capped", {}).items():
        if "skipped" in run:
            yield (f"serves inside a memory cgroup ({name})", "skipped: " + run["skipped"], "", "")
            continue
        yield (f"starts and serves inside a memory cgroup, page cache included ({name})",
               f"ready in {run.get('ready_s', float('nan')):.0f} s, {run['oom_kills']} OOM kills",
               "fits" if run["fits"] else "DOES NOT FIT", "fits in 6144 MiB")


def _rows_encoder(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """Ratios are the paired ones (each peer timed image by image alternately with ours)."""
    for model, figures in result["models"].items():
        machine = _model_conditions(result, figures)
        for row in _rows_encoder_model(model, figures, machine):
            yield (*row, machine)


def _model_conditions(result: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    """Where a model shape of encoder.json was measured (the file's conditions for entries from before
    each shape kept its own)."""
    return figures.get("conditions", result["conditions"])


def _rows_encoder_model(model: str, figures: dict[str, Any], machine: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    rates, ious = figures["images_per_s"], figures["mask_iou_vs_eager_fp32"]
    ours = rates["ours_served"]
    for peer, key, goal in (("eager torch", "eager", ""), ("ONNX Runtime (samexporter)", "onnxruntime", ""),
                            ("bare OpenVINO f32", "openvino_f32", ">= 0.95")):
        yield (f"served `/embed` vs {peer} ({model})", f"{ours:.3f} vs {rates[key]:.3f} img/s",
               f"{figures['vs_' + key]:.2f}x", goal)
    yield (f"served `/embed` vs our encoder in-process ({model})", f"{ours:.3f} vs {rates['ours_in_process']:.3f} img/s",
           f"{figures['served_vs_in_process']:.2f}x", "")
    native = "" if machine["avx512_bf16"] else " (no bf16 units on this CPU: f32 inside)"
    for label, ours_key, ratio_key in PRECISIONS:
        if ratio_key and ours_key in rates:
            yield (f"served `/embed` {label} vs bare OpenVINO bf16 ({model}){native}",
                   f"{rates[ours_key]:.3f} vs {rates['openvino_bf16']:.3f} img/s", f"{figures[ratio_key]:.2f}x", ">= 1.0")
    exact = min(min(ious[k].values()) for k in ("ours_served", "ours_in_process") if k in ious)
    yield (f"mask IoU of the default path vs eager fp32 ({model}, point and box)", f"min {exact:.4f}", "", ">= 0.999")
    for label, key in (("bf16", "ours_served_bf16"), ("int8", "ours_served_int8"), ("bare OpenVINO bf16", "openvino_bf16")):
        if key in ious:
            kinds = ", ".join(f"{kind} {value:.4f}" for kind, value in ious[key].items())
            yield (f"mask IoU of {label} vs eager fp32 ({model})", kinds, "", ">= 0.98" if key.startswith("ours") else "")


def _rows_batching(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    modes = result["modes"]
    for level in (key for key in modes["on"] if key != "batch_sizes"):
        on, off = modes["on"][level], modes["off"][level]
        yield (f"`/embed` batching on vs off, concurrency {level} ({result['model']})",
               f"{on['images_per_s']:.3f} vs {off['images_per_s']:.3f} img/s, p95 {on['latency']['p95_s']:.1f} vs {off['latency']['p95_s']:.1f} s",
               f"{on['images_per_s'] / off['images_per_s']:.2f}x", ">= 2x" if result["device"] == "cuda" and level == "16" else "")
    yield (f"batch sizes formed, batching on ({result['model']})", str(modes["on"]["batch_sizes"]), "", "")


def _rows_everything(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    for photo, regimes in result["photos"].items():
        for regime, f in regimes.items():
            yield (f"segment-everything, points_per_side 32, {regime} thresholds, {photo} ({result['model']})",
                   f"{f['ours_full_s']:.1f} s vs {f['theirs_full_s']:.1f} s; decoding {f['ours_cached_s']:.1f} vs {f['theirs_cached_s']:.1f} s; "
                   f"{f['count_ours']} vs {f['count_theirs']} instances, min IoU {f['min_iou']:.3f}",
                   f"{f['speedup_full']:.2f}x ({f['speedup_cached']:.2f}x decoding)", ">= 1.5x")


def best_batch(paths: dict[str, Any], names: tuple[str, ...]) -> tuple[str, str, float] | None:
    """The fastest (path, batch size, images/s) measured among the GPU suite's ``names`` paths."""
    measured = [(name, size, b["images_per_s"]) for name in names
                for size, b in paths.get(name, {}).get("batches", {}).items() if "images_per_s" in b]
    return max(measured, key=lambda row: row[2], default=None)


def _rows_gpu(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    published = result["published_segment_anything_fast_a100_images_per_s"]
    for model, figures in result["models"].items():
        paths = figures["paths"]
        ours = best_batch(paths, ("ours", "ours_compiled"))
        if ours is None:
            continue
        name, size, rate = ours
        for theirs, label in (("eager_fp32", "eager SAM fp32"), ("eager_bf16", "eager SAM bf16 autocast"),
                              ("sam_fast", "segment-anything-fast (compiled)"), ("sam_fast_eager", "segment-anything-fast (eager)")):
            found = best_batch(paths, (theirs,))
            if found:
                _, their_size, their_rate = found
                yield (f"encoder img/s on {result['device']}, {name} (batch {size}) vs {label} (batch {their_size}) ({model})",
                       f"{rate:.1f} vs {their_rate:.1f}", f"{rate / their_rate:.2f}x", "")
        if model in published:
            low, high = published[model]
            yield (f"encoder img/s on {result['device']} vs segment-anything-fast's published A100 figure ({model})",
                   f"{rate:.1f} vs {low:g}-{high:g}", f"{rate / low:.2f}x", "")
        iou = paths.get(name, {}).get("mask_iou_vs_eager_fp32", {})
        if "point" in iou:
            yield (f"mask IoU of {name} vs eager fp32 on the GPU ({model})", f"point {iou['point']:.4f}, box {iou['box']:.4f}", "", ">= 0.98")


def _rows_push(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    first, second, again = result["pushes"]
    yield (f"bytes a code-only release pushes vs the image ({result['change']}; {result['image']})",
           f"{second['registry_bytes_received'] / 1e6:.2f} MB vs {second['image_bytes_in_registry'] / 1e6:.0f} MB "
           f"({second['layers_to_send']} of {second['layers']} layers; first push {first['registry_bytes_received'] / 1e6:.0f} MB, "
           f"re-push {again['registry_bytes_received']} B)", f"{result['code_only_ratio']:.2%}", result["goal"])


def _rows_ui(result: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    for run in result["results"]:
        for photo in run["photos"]:
            click, server = photo["click_to_mask_ms"], photo["server_segment_ms"]
            yield (f"click to mask in headless Chromium vs the server's `/segment` ({run['model']}, {photo['photo']} "
                   f"{photo['size'][0]}x{photo['size'][1]}, localhost)",
                   f"{click['median_ms']:.0f} vs {server['median_ms']:.0f} ms, medians of {click['n']} (p95 {click['p95_ms']:.0f} ms)",
                   f"{click['median_ms'] / server['median_ms']:.2f}x", "")


ROWS = {"serve": _rows_serve, "ui": _rows_ui, "coldstart": _rows_coldstart, "encoder": _rows_encoder, "batching": _rows_batching,
        "everything": _rows_everything, "gpu": _rows_gpu, "push": _rows_push}


def table() -> str:
    lines = ["| measure | ours vs baseline | ratio | goal | conditions |", "|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        rows = ROWS.get(result["suite"].split("-")[0])
        if rows is None:
            continue
        for name, figures, ratio, goal, *machine in rows(result):
            where = f"{_machine(machine[0] if machine else result['conditions'])} (`{path.relative_to(ROOT)}`)"
            lines.append(f"| {name} | {figures} | {ratio} | {goal} | {where} |")
    return "\n".join(lines)


def _isa(conditions: dict[str, Any]) -> str:
    isa = conditions.get("isa", "avx512_bf16" if conditions.get("avx512_bf16") else "?")  # from before "isa" was kept
    return ISA_NAMES.get(isa, isa)


def _machine(c: dict[str, Any]) -> str:
    if c.get("cuda"):
        return f"{c['cuda']}, torch {c['torch']}, {c['date']}"
    return f"{c['cores']} cores ({_isa(c)}), torch {c['torch']}, {c['date']}"


def fast_paths_table() -> str:
    """Served `/embed` per precision and model shape, from encoder.json: the README's fast-path table."""
    path = RESULTS / "encoder.json"
    if not path.is_file():
        return "(no encoder results yet: python -m bench encoder)"
    lines = ["| model | precision | s/image | vs fp32 served | vs bare OpenVINO bf16 | mask IoU point | mask IoU box | CPU |",
             "|---|---|---|---|---|---|---|---|"]
    result = json.loads(path.read_text())
    for model, figures in result["models"].items():
        rates, ious = figures["images_per_s"], figures["mask_iou_vs_eager_fp32"]
        machine = _model_conditions(result, figures)
        for label, key, paired in PRECISIONS:
            if key in rates:
                iou, vs_bf16 = ious[key], f"{figures[paired]:.2f}x" if paired else ""
                lines.append(f"| {model} | {label} | {1 / rates[key]:.2f} | {rates[key] / rates['ours_served']:.2f}x | "
                             f"{vs_bf16} | {iou['point']:.4f} | {iou['box']:.4f} | {_isa(machine)}, {machine['date']} |")
    return "\n".join(lines)


BLOCKS = {"bench": table, "fastpaths": fast_paths_table}


def run(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    for name, make in BLOCKS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        block = f"{start}\n{make()}\n{end}"
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    readme.write_text(text)
    logger.info("README benchmark tables regenerated from %s", RESULTS)
