"""``segany compare``: a small workload (tiny model, 3 requests per target) run over the serverless and
Cloud Run emulators; the report holds every target and every row, the image over 4 MB fails on
Serverless with cause "payload limit" and passes on Cloud Run, report.json parses, the PNGs open."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from deploy.compare.runner import CAUSES
from deploy.compare.workload import KINDS, parse_workload

pytest.importorskip("matplotlib")
pytest.importorskip("uvicorn")
pytest.importorskip("boto3")

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"
TARGETS = ("sagemaker-serverless", "cloudrun", "sagemaker-batch", "cloudrun-job")
JOBS = ("sagemaker-batch", "cloudrun-job")
WORKLOAD = {
    "name": "small", "model": "tiny",
    "images": [{"id": "truck", "path": str(IMAGES / "truck.jpg")},
               {"id": "phone-12mp", "generate": {"width": 4000, "height": 3000, "seed": 1, "noise": 12, "quality": 92,
                                                 "min_bytes": 4_400_000, "max_bytes": 6_000_000}}],
    "mix": {"point": 0.5, "point_cached": 0.5},
    "traffic": {"requests_per_day": 50, "burst_size": 2, "think_time_s": 5, "idle_gap_s": 7200},
}


@pytest.fixture(scope="module")
def report(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from deploy.compare.report import write_report
    from deploy.compare.runner import run_compare

    if not (IMAGES / "truck.jpg").is_file():
        pytest.skip(f"no photos in {IMAGES}")
    out = tmp_path_factory.mktemp("compare")
    workload = parse_workload(WORKLOAD)
    env = {**os.environ, "SEGANY_MODEL": "tiny", "SEGANY_CHECKPOINT": str(tiny_checkpoint), "SEGANY_DEVICE": "cpu",
           "SEGANY_ENCODER": "torch", "SEGANY_CACHE_DIR": str(out / "cache"), "SEGANY_MAX_BODY_MB": "40",
           "BENTOML_DO_NOT_TRACK": "true"}
    seen: list[tuple[str, Any]] = []
    before = set(Path(tempfile.gettempdir()).glob("segany-compare-*"))
    run = run_compare(workload, TARGETS, out, model="tiny", requests=3, idle_s=0.5, env=env, prime=False,
                      progress=lambda target, record: seen.append((target, record)))
    assert set(Path(tempfile.gettempdir()).glob("segany-compare-*")) <= before  # its work folder is gone
    paths = write_report(run, workload, out)
    return {"run": run, "paths": paths, "out": out, "seen": seen}


def test_plan_visits_every_image_with_the_mix() -> None:
    from deploy.compare.runner import plan

    planned = plan(parse_workload(WORKLOAD), 3)
    assert [(p.session, p.kind, p.image) for p in planned] == [
        (0, "point", "truck"), (0, "point_cached", "truck"), (1, "point", "phone-12mp")]


def test_the_big_image_fails_on_serverless_for_its_payload_and_passes_on_cloud_run(report: dict[str, Any]) -> None:
    run = report["run"]
    assert run.images["phone-12mp"] > 4 * 2**20
    by_target = {t.target: t for t in run.targets}
    assert set(by_target) == set(TARGETS)
    big = {name: [r for r in t.records if r.image == "phone-12mp"] for name, t in by_target.items()}
    assert [(r.ok, r.cause) for r in big["sagemaker-serverless"]] == [(False, "payload limit")]
    assert "S3 upload or async needed" in big["sagemaker-serverless"][0].workaround
    assert [(r.ok, r.cause) for r in big["cloudrun"]] == [(True, None)]
    for job in JOBS:  # a job reads the image from storage: no request cap; every request is a job
        assert [(r.ok, r.cause) for r in big[job]] == [(True, None)]
        assert all(r.workaround.startswith("a job per request") for r in by_target[job].records)
    for t in run.targets:  # the small photo passes everywhere, the cached prompt reuses its image_id
        small = [r for r in t.records if r.image == "truck"]
        assert [(r.kind, r.ok) for r in small] == [("point", True), ("point_cached", True)]
        assert small[1].workaround == ("image_id reuse" if t.target not in JOBS else
                                       "a job per request (the answer when the job ends); image resent: no image_id across jobs")
        assert t.first_response_s and t.first_response_s > 0
        if t.target != "cloudrun-job":  # a task's start is inside its run: not measured apart
            assert t.cold_starts and t.cold_starts[0]["seconds"] > 0  # from zero on the first request
    assert len(by_target["sagemaker-batch"].cold_starts) == 3  # an instance per job
    assert [target for target, record in report["seen"] if record is not None].count("cloudrun") == 3


def test_report_md_holds_every_target_and_row(report: dict[str, Any]) -> None:
    text = report["paths"]["report.md"].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| |"))
    for target in TARGETS:
        assert target in header
    rows = ["max payload (request)", "GPU", "scale to zero", "memory cap", "cold start", "first request to first response",
            "throughput", "workarounds", "monthly cost (measured seconds)"]
    rows += [f"{kind} {q}" for kind in KINDS for q in ("p50", "p95", "p99")]
    rows += [f"failures: {cause}" for cause in CAUSES]
    table = [line for line in text.splitlines() if line.startswith("| ")]
    for row in rows:
        line = next((line for line in table if line.startswith(f"| {row}")), None)
        assert line is not None, row
        assert line.count("|") == len(TARGETS) + 2, line
    assert "failures: payload limit | 1 | 0 | 0 | 0 |" in text
    for section in ("## Recommendation for this profile", "## Against the seed article", "## Monthly cost, with the formula",
                    "## Break-even points", "latency.png", "cost.png"):
        assert section in text
    assert "**cloudrun**" in text  # no failures and the free tier: the seed's conclusion
    assert " x $" in text  # the formula is shown


def test_report_json_parses_and_the_pngs_open(report: dict[str, Any]) -> None:
    from PIL import Image

    data = json.loads(report["paths"]["report.json"].read_text())
    assert set(data["targets"]) == set(TARGETS)
    serverless = data["targets"]["sagemaker-serverless"]
    assert serverless["failures"]["payload limit"] == 1
    assert serverless["failed_requests"][0]["image"] == "phone-12mp"
    assert data["targets"]["cloudrun"]["failures"] == {cause: 0 for cause in CAUSES}
    assert data["recommendation"]["target"] == "cloudrun"
    assert data["costs"]["cloudrun"]["formula"]
    assert len(data["run"]["targets"][0]["records"]) == 3
    for name in ("latency.png", "cost.png"):
        with Image.open(report["paths"][name]) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 300


def test_command_refuses_an_unknown_target(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deploy.compare.command import compare

    result = CliRunner().invoke(compare, ["--targets", "sagemaker-lambda", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "choose from" in result.output
