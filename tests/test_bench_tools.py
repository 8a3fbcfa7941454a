"""The benchmark suite's own tools: the memory cap that proves "fits in 6 GB", the batch-size
histogram parser, and the README table built from the committed results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import report
from bench.batching import batch_sizes
from bench.common import RESULTS
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
               "everything": "segment-everything, points_per_side 32"}
    for suite in suites:
        assert markers[suite] in table, suite
    assert table in (RESULTS.parent.parent / "README.md").read_text(), "README table is stale: run python -m bench report"
