"""``segany batch``: every image under INPUT through the pipeline in process, one result per
image, sharded as Cloud Run job tasks are, resumable, with manifests; over a folder, S3 (moto)
and GCS (the fake), and as the tasks of a Cloud Run job (the fake Admin API runs them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from deploy.batch import BatchSpec, merge_manifests, run_batch, shard
from tests.test_segment import assert_masks_match, reference

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "images"
NAMES = sorted(p.name for p in PHOTOS.glob("*.jpg"))
OPEN = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint, tmp_path_factory):  # type: ignore[no-untyped-def]
    from deploy.batch import load_pipeline
    from runners.settings import Settings

    env = {"SEGANY_MODEL": "tiny", "SEGANY_CHECKPOINT": str(tiny_checkpoint),
           "SEGANY_CACHE_DIR": str(tmp_path_factory.mktemp("batch-cache"))}
    return load_pipeline(Settings.from_env(env))


@pytest.fixture
def photos(tmp_path) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(PHOTOS / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    return tmp_path / "in"


def test_segment_results_equal_sam_predictor_and_a_rerun_skips_them(pipeline, photos, tmp_path, predictor_for):
    spec = BatchSpec(str(photos), str(tmp_path / "out"), "segment", {"points": [[200, 150]], "labels": [1]})
    manifest = run_batch(spec, pipeline)
    assert [item["input"] for item in manifest["succeeded"]] == [f"nested/{n}" for n in NAMES] and not manifest["failed"]
    for name in NAMES:
        answer = json.loads((tmp_path / "out" / "nested" / f"{name}.json").read_text())
        full_logits, _, _ = reference(predictor_for(name.removesuffix(".jpg")), {"points": [[200, 150]], "labels": [1]}, True)
        ours = np.stack([mask_utils.decode(m["segmentation"]) for m in answer["results"][0]["masks"]]).astype(bool)
        assert_masks_match(ours, full_logits)
    again = run_batch(spec, pipeline)
    assert not again["succeeded"] and len(again["skipped"]) == len(NAMES)
    written = json.loads((tmp_path / "out" / "_manifest" / "task-0-of-1.json").read_text())
    assert len(written["skipped"]) == len(NAMES)


def test_everything_with_open_thresholds_and_embed(pipeline, photos, tmp_path):
    manifest = run_batch(BatchSpec(str(photos), str(tmp_path / "all"), "everything", OPEN), pipeline)
    assert len(manifest["succeeded"]) == len(NAMES)
    for name in NAMES:
        assert json.loads((tmp_path / "all" / "nested" / f"{name}.json").read_text())["instances"]
    run_batch(BatchSpec(str(photos), str(tmp_path / "emb"), "embed"), pipeline)
    assert np.load(tmp_path / "emb" / "nested" / f"{NAMES[0]}.npy").shape[-3:] == (256, 64, 64)


def test_tasks_share_the_images_and_the_manifests_merge(pipeline, photos, tmp_path):
    assert shard(list("abcde"), 0, 2) == ["a", "c", "e"] and shard(list("abcde"), 1, 2) == ["b", "d"]
    out = str(tmp_path / "out")
    parts = [run_batch(BatchSpec.sharded_from_env(str(photos), out, "embed", {}, None, None,
                                                  env={"CLOUD_RUN_TASK_INDEX": str(i), "CLOUD_RUN_TASK_COUNT": "2"}), pipeline)
             for i in range(2)]
    taken = [set(p["taken"]) for p in parts]
    assert not (taken[0] & taken[1]) and taken[0] | taken[1] == {f"nested/{n}" for n in NAMES}
    merged = merge_manifests(out)
    assert merged["tasks"] == 2 and len(merged["succeeded"]) == len(NAMES)
    assert json.loads((tmp_path / "out" / "_manifest.json").read_text()) == merged


def test_a_bad_image_fails_in_the_manifest_and_the_command_exits_2(pipeline, photos, tmp_path, tiny_checkpoint, monkeypatch):
    (photos / "nested" / "broken.jpg").write_bytes(b"not a jpeg")
    manifest = run_batch(BatchSpec(str(photos), str(tmp_path / "out"), "embed"), pipeline)
    (failed,) = manifest["failed"]
    assert failed["input"] == "nested/broken.jpg" and failed["code"] == "invalid_image"
    assert len(manifest["succeeded"]) == len(NAMES)
    from deploy.cli import main

    monkeypatch.setenv("SEGANY_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["batch", str(photos), str(tmp_path / "cli"), "--task", "embed", "--model", "tiny",
                                       "--checkpoint", str(tiny_checkpoint)])
    assert result.exit_code == 2
    assert json.loads((tmp_path / "cli" / "_manifest.json").read_text())["failed"][0]["input"] == "nested/broken.jpg"
    result = CliRunner().invoke(main, ["batch", str(photos), "ftp://x/out"])
    assert result.exit_code == 2


def test_s3_to_s3_and_gs_to_gs(pipeline, moto_s3, fake_gcs):
    moto_s3.client.create_bucket(Bucket="photos")
    fake_gcs.create_bucket("photos")
    for name in NAMES:
        moto_s3.put("photos", f"in/{name}", (PHOTOS / name).read_bytes())
        fake_gcs.put("photos", f"in/{name}", (PHOTOS / name).read_bytes(), "image/jpeg")
    for scheme in ("s3", "gs"):
        manifest = run_batch(BatchSpec(f"{scheme}://photos/in", f"{scheme}://photos/out", "segment",
                                       {"boxes": [[10, 10, 200, 200]]}), pipeline)
        assert len(manifest["succeeded"]) == len(NAMES), scheme
    body = moto_s3.client.get_object(Bucket="photos", Key=f"out/{NAMES[0]}.json")["Body"].read()
    assert json.loads(body)["results"][0]["masks"]
    assert json.loads(fake_gcs.buckets["photos"][f"out/{NAMES[0]}.json"].data)["results"][0]["masks"]


def test_a_cloud_run_job_runs_the_batch_over_gcs(pipeline, fake_gcs, fake_cloudrun, monkeypatch):
    """segany deploy gcp --job: each task of the execution runs the runner with its index, as the
    job's container (`segany batch INPUT OUTPUT --task ...`) would; the deploy merges the manifests."""
    from deploy.cli import main
    from tests.fakes.fake_cloudrun import task_env

    fake_gcs.create_bucket("photos")
    for name in NAMES:
        fake_gcs.put("photos", f"in/{name}", (PHOTOS / name).read_bytes(), "image/jpeg")
    monkeypatch.setenv("SEGANY_CLOUD_RUN_ENDPOINT", fake_cloudrun.endpoint)

    def run_task(job, execution, index, count):  # type: ignore[no-untyped-def]
        args = job["template"]["template"]["containers"][0]["args"]
        assert args[:3] == ["batch", "gs://photos/in", "gs://photos/out"]
        env = task_env(execution, index)
        spec = BatchSpec.sharded_from_env(args[1], args[2], args[args.index("--task") + 1], {}, None, None, env=env)
        return not run_batch(spec, pipeline)["failed"]

    fake_cloudrun.on_execution = run_task
    result = CliRunner().invoke(main, ["deploy", "gcp", "--project", fake_cloudrun.project, "--region", fake_cloudrun.region,
                                       "--service", "sam-batch", "--image", "r/segment-anywhere:cpu-tiny", "--model", "tiny",
                                       "--job", "--input", "gs://photos/in", "--output", "gs://photos/out", "--tasks", "2",
                                       "--task", "embed"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 task(s) succeeded, 0 failed" in result.output
    merged = json.loads(fake_gcs.buckets["photos"]["out/_manifest.json"].data)
    assert merged["tasks"] == 2 and sorted(item["input"] for item in merged["succeeded"]) == NAMES
    assert all(f"out/{name}.npy" in fake_gcs.buckets["photos"] for name in NAMES)
