"""``segany batch``: every image under INPUT through the pipeline in process, one result per image
(what the HTTP API answers), sharded as Cloud Run job tasks are, resumable, with manifests; over a
folder, S3 (moto) and GCS (the fake), and as the tasks of a Cloud Run job (the fake Admin API).

The model (tiny, the CPU image's torch-free engine) loads once for the module; the command's own
loading is replaced by that pipeline, and a test that must not load a model sees a loader that fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from deploy.batch import BatchSpec, merge_manifests, run_batch, shard
from tests.conftest import converted_cache_in
from tests.test_segment import assert_masks_match, reference

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "images"
NAMES = ("dog", "groceries", "truck")
# nested/ and an upper-case extension: images are found at any depth, in any case, in sorted order
FILES = {"nested/dog.jpg": "dog", "nested/groceries.jpg": "groceries", "truck.JPG": "truck"}
POINT = {"points": [[200, 150]], "labels": [1]}
OPEN = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint, tiny_conversion, tmp_path_factory):  # type: ignore[no-untyped-def]
    from deploy.batch import load_pipeline
    from runners.settings import Settings

    cache = converted_cache_in(tiny_conversion, tmp_path_factory.mktemp("batch-cache"))  # converted once per session
    env = {"SEGANY_MODEL": "tiny", "SEGANY_CHECKPOINT": str(tiny_checkpoint), "SEGANY_CACHE_DIR": str(cache)}
    return load_pipeline(Settings.from_env(env))


@pytest.fixture
def loads(pipeline, monkeypatch):  # type: ignore[no-untyped-def]
    """The settings each model load of the command asked for; the load gives the module's pipeline."""
    asked: list = []
    monkeypatch.setattr("deploy.batch.load_pipeline", lambda settings: asked.append(settings) or pipeline)
    return asked


@pytest.fixture
def no_model(monkeypatch):  # type: ignore[no-untyped-def]
    def fail(settings):  # type: ignore[no-untyped-def]
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("deploy.batch.load_pipeline", fail)


@pytest.fixture
def photos(tmp_path) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    for name, photo in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / f"{photo}.jpg", folder / name)
    (folder / "nested" / "notes.txt").write_text("not an image")
    return folder


def batch(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(__import__("deploy.cli", fromlist=["main"]).main, ["batch", *args])


def masks(answer: dict) -> np.ndarray:
    return np.stack([mask_utils.decode(m["segmentation"]) for m in answer["results"][0]["masks"]]).astype(bool)


def test_segment_equals_sam_predictor_and_a_rerun_skips_without_loading(photos, tmp_path, tiny_checkpoint, loads,
                                                                         predictor_for, monkeypatch):
    out = tmp_path / "out"
    result = batch(str(photos), str(out), "--task", "segment", "--points", "[[200, 150]]", "--model", "tiny",
                   "--checkpoint", str(tiny_checkpoint))
    assert result.exit_code == 0, result.output
    assert [(s.model_type, s.checkpoint) for s in loads] == [("tiny", str(tiny_checkpoint))]  # one load, the options'
    manifest = json.loads((out / "_manifest" / "task-0-of-1.json").read_text())
    assert manifest["taken"] == sorted(FILES) and not manifest["failed"] and not manifest["skipped"]
    assert [s["output"] for s in manifest["succeeded"]] == [f"{name}.json" for name in sorted(FILES)]
    assert manifest["request"] == POINT and (manifest["task_index"], manifest["task_count"]) == (0, 1)
    assert manifest["model"] == "tiny" and manifest["settings"]["model_type"] == "tiny"
    assert all(s["seconds"] > 0 for s in manifest["succeeded"]) and manifest["timings"]["images_s"] > 0
    for name, photo in FILES.items():
        answer = json.loads((out / f"{name}.json").read_text())
        assert set(answer) == {"image_id", "width", "height", "output", "results", "overlay"}  # SegmentResponse
        full_logits, _, _ = reference(predictor_for(photo), POINT, True)
        assert_masks_match(masks(answer), full_logits)
    assert json.loads((out / "_manifest.json").read_text())["succeeded"] == manifest["succeeded"]

    monkeypatch.setattr("deploy.batch.load_pipeline", lambda settings: pytest.fail("a rerun with nothing left loaded the model"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if "_manifest" not in str(p)}
    assert batch(str(photos), str(out), "--task", "segment", "--points", "[[200, 150]]").exit_code == 0
    again = json.loads((out / "_manifest" / "task-0-of-1.json").read_text())
    assert not again["succeeded"] and [s["input"] for s in again["skipped"]] == sorted(FILES) and again["model"] is None
    assert before == {p: p.stat().st_mtime_ns for p in before}


def test_everything_with_open_thresholds_and_embed(pipeline, photos, tmp_path):
    manifest = run_batch(BatchSpec(str(photos), str(tmp_path / "all"), "everything", OPEN), pipeline)
    assert len(manifest["succeeded"]) == len(FILES)
    for name in FILES:
        assert json.loads((tmp_path / "all" / f"{name}.json").read_text())["instances"]
    manifest = run_batch(BatchSpec(str(photos), str(tmp_path / "emb"), "embed"), pipeline)
    for entry in manifest["succeeded"]:  # what /embed's .npy headers say, kept in the manifest
        assert entry["output"].endswith(".npy") and len(entry["original_size"]) == 2 and entry["model"] == "tiny"
    embedding = np.load(tmp_path / "emb" / "truck.JPG.npy")
    assert embedding.shape == (1, 256, 64, 64) and embedding.dtype == np.float32  # as /embed's .npy answer


def test_tasks_take_disjoint_shares_that_cover_all_and_the_manifests_merge(photos, tmp_path, loads, monkeypatch):
    assert shard(list("abcde"), 0, 2) == ["a", "c", "e"] and shard(list("abcde"), 1, 2) == ["b", "d"]
    out = tmp_path / "out"
    monkeypatch.setenv("CLOUD_RUN_TASK_INDEX", "0")  # task 0 as Cloud Run starts it, task 1 by the options
    monkeypatch.setenv("CLOUD_RUN_TASK_COUNT", "2")
    assert batch(str(photos), str(out), "--task", "embed").exit_code == 0
    assert not (out / "_manifest.json").exists()  # one task of several: whoever wants the whole merges
    assert batch("--merge", str(out)).exit_code == 2  # task 1 has not run: its manifest is missing
    monkeypatch.delenv("CLOUD_RUN_TASK_INDEX")
    monkeypatch.delenv("CLOUD_RUN_TASK_COUNT")
    assert batch(str(photos), str(out), "--task", "embed", "--tasks", "2", "--task-index", "1").exit_code == 0
    parts = [json.loads((out / "_manifest" / f"task-{i}-of-2.json").read_text()) for i in range(2)]
    taken = [set(part["taken"]) for part in parts]
    assert not taken[0] & taken[1] and taken[0] | taken[1] == set(FILES) and all(taken)
    result = batch("--merge", str(out))
    assert result.exit_code == 0, result.output
    merged = json.loads((out / "_manifest.json").read_text())
    assert merged == merge_manifests(str(out)) and merged["tasks"] == 2 and merged["missing_tasks"] == []
    assert sorted(s["input"] for s in merged["succeeded"]) == sorted(FILES)

    everything = tmp_path / "all-tasks"  # --tasks without an index: every task, in this process, then merged
    assert batch(str(photos), str(everything), "--task", "embed", "--tasks", "2").exit_code == 0
    assert json.loads((everything / "_manifest.json").read_text())["tasks"] == 2 and len(loads) == 3


def test_a_bad_image_fails_in_the_manifest_and_the_command_exits_2(photos, tmp_path, loads, caplog):
    (photos / "nested" / "broken.jpg").write_bytes(b"not a jpeg")
    result = batch(str(photos), str(tmp_path / "out"), "--task", "embed")
    assert result.exit_code == 2
    assert f"{tmp_path / 'out'}/_manifest.json" in caplog.text  # the message names the manifest
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    (failed,) = manifest["failed"]
    assert failed["input"] == "nested/broken.jpg" and failed["code"] == "invalid_image" and failed["message"]
    assert sorted(s["input"] for s in manifest["succeeded"]) == sorted(FILES)


@pytest.mark.parametrize("args, says", [
    (["ftp://host/photos", "OUT"], "unknown scheme"),
    (["MISSING", "OUT"], "is not a folder"),
    (["IN", "OUT", "--task", "segment", "--points", "[[1, 2]"], "--points is not JSON"),
    (["IN", "OUT", "--task", "segment"], "no prompt"),
    (["IN", "OUT", "--options", '{"points_per_sid": 4}'], "points_per_sid"),
    (["IN", "OUT", "--tasks", "2", "--task-index", "2"], "task index 2 of 2"),
])
def test_bad_settings_are_one_message_and_exit_2_before_any_model_loads(photos, tmp_path, no_model, caplog, args, says):
    paths = {"IN": str(photos), "OUT": str(tmp_path / "out"), "MISSING": str(tmp_path / "missing")}
    result = batch(*(paths.get(arg, arg) for arg in args))
    assert result.exit_code == 2 and says in caplog.text and not (tmp_path / "out").exists()


def test_overlays_written_inside_input_are_not_taken_as_images(pipeline, photos):
    spec = BatchSpec(str(photos), str(photos), "segment", {**POINT, "output": "overlay"})
    assert len(run_batch(spec, pipeline)["succeeded"]) == len(FILES)
    assert (photos / "truck.JPG.png").read_bytes().startswith(b"\x89PNG")
    again = run_batch(spec, pipeline)
    assert again["taken"] == sorted(FILES) and len(again["skipped"]) == len(FILES)


def test_s3_to_s3_and_gs_to_gs(pipeline, moto_s3, fake_gcs):
    moto_s3.client.create_bucket(Bucket="photos")
    fake_gcs.create_bucket("photos")
    for name, photo in FILES.items():
        moto_s3.put("photos", f"in/{name}", (PHOTOS / f"{photo}.jpg").read_bytes())
        fake_gcs.put("photos", f"in/{name}", (PHOTOS / f"{photo}.jpg").read_bytes(), "image/jpeg")
    moto_s3.put("photos", "in/nested/notes.txt", b"not an image")
    spec = {"task": "segment", "fields": {"boxes": [[10, 10, 200, 200]]}}
    for scheme in ("s3", "gs"):
        manifest = run_batch(BatchSpec(f"{scheme}://photos/in", f"{scheme}://photos/out", **spec), pipeline)
        assert [s["input"] for s in manifest["succeeded"]] == sorted(FILES), scheme
        assert manifest["manifest"] == f"{scheme}://photos/out/_manifest/task-0-of-1.json"
        rerun = run_batch(BatchSpec(f"{scheme}://photos/in", f"{scheme}://photos/out/", **spec), pipeline)
        assert len(rerun["skipped"]) == len(FILES) and not rerun["succeeded"], scheme
    for name in FILES:
        from_s3 = moto_s3.client.get_object(Bucket="photos", Key=f"out/{name}.json")["Body"].read()
        assert json.loads(from_s3) == json.loads(fake_gcs.buckets["photos"][f"out/{name}.json"].data)
        assert json.loads(from_s3)["results"][0]["masks"]


def test_a_cloud_run_job_runs_the_batch_over_gcs(pipeline, fake_gcs, fake_cloudrun, monkeypatch):
    """segany deploy gcp --job: each task of the execution runs the runner with its index, as the
    job's container (`segany batch INPUT OUTPUT --task ...`) would; the deploy merges the manifests."""
    from deploy.cli import main
    from tests.fakes.fake_cloudrun import task_env

    fake_gcs.create_bucket("photos")
    for photo in NAMES:
        fake_gcs.put("photos", f"in/{photo}.jpg", (PHOTOS / f"{photo}.jpg").read_bytes(), "image/jpeg")
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
    assert merged["tasks"] == 2 and sorted(item["input"] for item in merged["succeeded"]) == [f"{n}.jpg" for n in NAMES]
    assert all(f"out/{name}.jpg.npy" in fake_gcs.buckets["photos"] for name in NAMES)
