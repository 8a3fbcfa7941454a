"""The benchmark suite's own tools: the memory cap that proves "fits in 6 GB", the batch-size
histogram parser, the paired timing of the encoder suite, and the README table built from the
committed results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import report
from bench.batching import batch_sizes
from bench.common import RESULTS, ROOT
from bench.encoder import paired_seconds
from bench.memcap import MemoryCgroup, cgroup_name, evict_from_page_cache

ALLOCATE = "import sys; blocks = [bytearray(2**20) for _ in range(int(sys.argv[1]))]"


def _cgroup(label: str, limit_mb: int) -> MemoryCgroup:
    try:
        return MemoryCgroup(cgroup_name(label), limit_mb)
    except OSError as exc:
        pytest.skip(f"no writable cgroup memory controller here: {exc}")


@pytest.mark.parametrize(("allocate_mb", "fits"), [(32, True), (256, False)])
def test_memory_cgroup_kills_what_does_not_fit_and_reports_it(allocate_mb: int, fits: bool) -> None:
    cgroup = _cgroup(f"test{allocate_mb}", 128)
    try:
        command = cgroup.wrap([sys.executable, "-c", ALLOCATE, str(allocate_mb)])
        returncode = subprocess.run(command, capture_output=True).returncode
        figures = cgroup.report()
    finally:
        cgroup.close()
    assert (returncode == 0) is fits
    assert (figures["oom_kills"] == 0) is fits
    assert figures["limit_mb"] == 128
    assert not cgroup.path.exists()


def test_evict_from_page_cache_reads_back_the_same_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 10000)
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 10)
    assert evict_from_page_cache(tmp_path, tmp_path / "a.bin") == 3
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"y" * 10


def test_batch_sizes_turns_the_cumulative_histogram_into_counts() -> None:
    metrics = "\n".join([
        '# TYPE bentoml_service_adaptive_batch_size histogram',
        'bentoml_service_adaptive_batch_size_bucket{le="1.0",method_name="encode",worker_index="1"} 3.0',
        'bentoml_service_adaptive_batch_size_bucket{le="2.0",method_name="encode",worker_index="1"} 3.0',
        'bentoml_service_adaptive_batch_size_bucket{le="4.0",method_name="encode",worker_index="1"} 5.0',
        'bentoml_service_adaptive_batch_size_bucket{le="+Inf",method_name="encode",worker_index="1"} 5.0',
        'bentoml_service_adaptive_batch_size_bucket{le="1.0",method_name="other",worker_index="1"} 9.0',
    ])
    assert batch_sizes(metrics) == {"1": 3.0, "4": 2.0}


def test_the_readme_table_has_a_row_per_committed_result() -> None:
    table = report.table()
    suites = {json.loads(path.read_text())["suite"].split("-")[0] for path in RESULTS.glob("*.json")}
    assert suites, "bench/results holds no results"
    markers = {"encoder": "served `/embed` vs bare OpenVINO f32", "coldstart": "start to ready vs floor",
               "serve": "prompt on a cached image", "batching": "batching on vs off",
               "everything": "segment-everything, points_per_side 32", "gpu": "encoder img/s on",
               "push": "bytes a code-only release pushes", "ui": "click to mask in headless Chromium"}
    for suite in suites:
        assert markers[suite] in table, suite
    readme = (RESULTS.parent.parent / "README.md").read_text()
    assert table in readme, "README table is stale: run python -m bench report"
    assert report.fast_paths_table() in readme, "README fast-path table is stale: run python -m bench report"


def test_paired_seconds_alternates_the_order_and_warms_the_peer_up() -> None:
    calls: list[tuple[str, int]] = []
    ours_s, theirs_s = paired_seconds(lambda i: calls.append(("ours", i)), lambda i: calls.append(("theirs", i)), 4)
    assert calls == [("theirs", 0), ("theirs", 1), ("ours", 1), ("ours", 2), ("theirs", 2), ("theirs", 3), ("ours", 3)]
    assert len(ours_s) == len(theirs_s) == 3 and all(s >= 0 for s in ours_s + theirs_s)


ALL_PAIRS = ("eager", "onnxruntime", "openvino_f32", "ours_in_process", "openvino_bf16", "int8_vs_openvino_bf16")
SERVERS = {"openvino_bf16": "ours_served_bf16", "int8_vs_openvino_bf16": "ours_served_int8"}


def _pairs(seconds: float, names=ALL_PAIRS) -> dict:
    return {name: {"ours": SERVERS.get(name, "ours_served"), "ours_s": [1.0, 1.0], "theirs_s": [seconds, seconds]}
            for name in names}


def test_encoder_run_keeps_other_shapes_and_pairs_measured_the_same_way(tmp_path, monkeypatch) -> None:
    from bench import common, encoder

    def entry(seconds: float, method: str = encoder.METHOD) -> dict:
        return encoder.summarize({"method": method, "pairs": _pairs(seconds), "mask_iou_vs_eager_fp32": {}})

    previous = {"models": {"vit_h": entry(2.0), "vit_l": entry(3.0, method="sequential")}}
    (tmp_path / "encoder.json").write_text(json.dumps(previous))
    monkeypatch.setattr(encoder, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(encoder, "measure", lambda model_type, n_images, only=None: {
        "pairs": _pairs(0.5, only or ALL_PAIRS),
        "mask_iou_vs_eager_fp32": {}})

    encoder.run(("vit_b",))
    models = json.loads((tmp_path / "encoder.json").read_text())["models"]
    assert set(models) == {"vit_b", "vit_h"}  # vit_l was measured another way
    assert models["vit_b"]["vs_openvino_f32"] == 0.5 and models["vit_h"]["vs_openvino_f32"] == 2.0

    encoder.run(("vit_h",), only=("openvino_f32",))  # one pair again; the others stay
    vit_h = json.loads((tmp_path / "encoder.json").read_text())["models"]["vit_h"]
    assert vit_h["vs_openvino_f32"] == 0.5 and vit_h["vs_eager"] == 2.0
    assert vit_h["images_per_s"]["openvino_f32"] == 2.0 and vit_h["images_per_s"]["ours_served"] == 1.0


def test_the_gpu_suite_runs_end_to_end_here_on_cpu(tmp_path) -> None:
    """bench/gpu.py as bench/device/run.sh runs it on a lent GPU, here on CPU with the tiny shape
    (the code, not the speed): each path measured at its batch sizes, results written, masks
    compared with eager fp32's, README rows rendered. The device gets one try; this is its rehearsal."""
    env = {**os.environ, "SEGANY_BENCH_RESULTS": str(tmp_path), "SEGANY_BENCH_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "bench", "gpu", "--gpu-models", "tiny", "--gpu-batches", "1", "2",
               "--gpu-paths", "eager_fp32", "ours", "sam_fast_eager", "--gpu-min-calls", "1"]
    subprocess.run(command, env=env, cwd=ROOT, check=True, timeout=900, capture_output=True)
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["complete"] and result["device"].startswith("cpu")
    paths = result["models"]["tiny"]["paths"]
    assert set(paths["eager_fp32"]["batches"]) == {"1"}  # the reference at its sizes only
    assert set(paths["ours"]["batches"]) == {"1", "2"}
    assert all(b["images_per_s"] > 0 and b["calls"] == 1 for b in paths["ours"]["batches"].values())
    assert paths["eager_fp32"]["mask_iou_vs_eager_fp32"] == {"point": 1.0, "box": 1.0}
    assert min(paths["ours"]["mask_iou_vs_eager_fp32"].values()) >= 0.98  # bf16 + SDPA, as served on CUDA
    assert "skipped" in paths["sam_fast_eager"]  # segment-anything-fast has no tiny model (nor is it installed)
    assert set(result["models"]["tiny"]["ratios"]) == {"ours_best_vs_eager_fp32_best", "ours_best_batch_vs_batch_1"}
    rows = [row[0] for row in report.ROWS["gpu"](result)]
    assert any("vs eager SAM fp32" in row for row in rows) and any("mask IoU of ours" in row for row in rows)
