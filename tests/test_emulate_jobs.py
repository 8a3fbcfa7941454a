"""``segany emulate sagemaker-batch`` and ``segany emulate cloudrun-job``: a Batch Transform job
over S3 (moto) and a Cloud Run job execution over a folder, each run by the real image's process
(tiny model). Outputs equal SamPredictor's; the payload cap at the byte, a container's refusal, a
task timeout with its retries and a memory limit end as the platform reports them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from tests.conftest import server_env
from tests.test_segment import assert_masks_match, reference

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "images"
POINT = {"points": [[200, 150]], "labels": [1]}
MiB = 2**20


def emulate(*args: str) -> Any:
    from deploy.emulate.command import emulate as command

    return CliRunner().invoke(command, list(args), catch_exceptions=False)


def masks(answer: dict) -> np.ndarray:
    return np.stack([mask_utils.decode(m["segmentation"]) for m in answer["results"][0]["masks"]]).astype(bool)


@pytest.fixture
def server_environment(tiny_checkpoint: Path, moto_s3: Any, _fake_gcs_server: Any, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in server_env(tiny_checkpoint, tmp_path / "cache", moto_s3.endpoint, _fake_gcs_server.endpoint).items():
        monkeypatch.setenv(key, value)


def test_a_transform_job_writes_each_output_and_fails_as_batch_transform_reports(
        server_environment: None, moto_s3: Any, tmp_path: Path, predictor_for: Any) -> None:
    s3 = moto_s3.client
    s3.create_bucket(Bucket="photos-in")
    s3.create_bucket(Bucket="results-out")
    s3.put_object(Bucket="photos-in", Key="photos/truck.jpg", Body=(PHOTOS / "truck.jpg").read_bytes())
    s3.put_object(Bucket="photos-in", Key="photos/under.jpg", Body=b"\xff" * MiB)  # at the cap: reaches the container
    s3.put_object(Bucket="photos-in", Key="photos/over.jpg", Body=b"\xff" * (MiB + 1))  # one byte over: never sent
    result = emulate("sagemaker-batch", "--input", "s3://photos-in/photos/", "--output", "s3://results-out/job-1",
                     "--custom-attributes", "task=segment;points=[[200,150]];labels=[1];output=rle",
                     "--max-payload-mb", "1", "--max-retries", "2", "--log-dir", str(tmp_path / "logs"))
    assert result.exit_code == 2, result.output
    described = json.loads(result.output[result.output.index("{"):])
    assert described["TransformJobStatus"] == "Failed"
    assert described["FailureReason"] == "ClientError: See job logs for more information"
    records = {r["key"]: r for r in described["Emulator"]["records"]}
    assert (records["truck.jpg"]["ok"], records["truck.jpg"]["attempts"]) == (True, 1)
    assert (records["under.jpg"]["status"], records["under.jpg"]["attempts"]) == (400, 1)  # a 4xx is not retried
    assert (records["over.jpg"]["status"], records["over.jpg"]["attempts"]) == (None, 0)
    assert "Too much data for max payload size" in records["over.jpg"]["log"]
    assert described["Emulator"]["instance_start_s"] > 0 and described["Emulator"]["billed_s"] >= described["Emulator"]["instance_start_s"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results-out")["Contents"]]
    assert keys == ["job-1/truck.jpg.out"]  # a failed object gets no output
    answer = json.loads(s3.get_object(Bucket="results-out", Key="job-1/truck.jpg.out")["Body"].read())
    full_logits, _, _ = reference(predictor_for("truck"), POINT, True)
    assert_masks_match(masks(answer), full_logits)
    log = (tmp_path / "logs" / "emulated-transform-job.log").read_text()
    assert "MaxPayloadInMB=1" in log and "photos-in/photos/under.jpg: ClientError: 400" in log


@pytest.mark.parametrize("args, says", [
    (["--max-payload-mb", "101"], "MaxPayloadInMB 101: 0-100"),
    (["--max-retries", "4"], "InvocationsMaxRetries 4: 0-3"),
    (["--timeout-s", "3601"], "InvocationsTimeoutInSeconds 3601: 1-3600"),
    (["--tasks", "2"], "are cloudrun-job's"),
])
def test_a_transform_job_the_api_refuses_stops_before_any_start(args: list[str], says: str, tmp_path: Path) -> None:
    result = emulate("sagemaker-batch", "--input", "s3://photos-in/photos/", "--output", "s3://results-out/x", *args,
                     "--log-dir", str(tmp_path))
    assert result.exit_code == 2 and says in result.output
    assert not list(tmp_path.iterdir())  # nothing started


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("dog", "truck"):
        shutil.copy(PHOTOS / f"{name}.jpg", folder / f"{name}.jpg")
    return folder


def test_a_cloud_run_job_runs_its_tasks_on_disjoint_shares(server_environment: None, photo_folder: Path, tmp_path: Path,
                                                           predictor_for: Any) -> None:
    out = tmp_path / "out"
    result = emulate("cloudrun-job", "--input", str(photo_folder), "--output", str(out), "--tasks", "2",
                     "--parallelism", "1", "--log-dir", str(tmp_path / "logs"), "--",
                     "--task", "segment", "--points", "[[200, 150]]")
    assert result.exit_code == 0, result.output
    execution = json.loads(result.output[result.output.index("{"):])
    assert (execution["task_count"], execution["succeeded_count"], execution["failed_count"]) == (2, 2, 0)
    assert execution["conditions"][0]["state"] == "CONDITION_SUCCEEDED"
    taken = []
    for index in (0, 1):
        manifest = json.loads((out / "_manifest" / f"task-{index}-of-2.json").read_text())
        assert (manifest["task_index"], manifest["task_count"]) == (index, 2)  # CLOUD_RUN_TASK_INDEX/COUNT reached it
        taken += manifest["taken"]
    assert sorted(taken) == ["dog.jpg", "truck.jpg"]
    for name in ("dog", "truck"):
        full_logits, _, _ = reference(predictor_for(name), POINT, True)
        assert_masks_match(masks(json.loads((out / f"{name}.jpg.json").read_text())), full_logits)


def test_a_task_past_its_timeout_is_retried_then_fails(server_environment: None, photo_folder: Path, tmp_path: Path) -> None:
    result = emulate("cloudrun-job", "--input", str(photo_folder), "--output", str(tmp_path / "out"), "--tasks", "1",
                     "--timeout-s", "1", "--max-retries", "1", "--log-dir", str(tmp_path / "logs"))
    assert result.exit_code == 2
    execution = json.loads(result.output[result.output.index("{"):])
    assert (execution["failed_count"], execution["retried_count"]) == (1, 1)
    attempts = execution["tasks"][0]["attempts"]
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert all("configured timeout of 1 s was reached" in a["reason"] for a in attempts), attempts
    assert execution["conditions"][0]["state"] == "CONDITION_FAILED"


def test_a_task_over_its_memory_limit_fails_as_cloud_run_reports_it(server_environment: None, photo_folder: Path,
                                                                    tmp_path: Path) -> None:
    result = emulate("cloudrun-job", "--input", str(photo_folder), "--output", str(tmp_path / "out"), "--tasks", "1",
                     "--max-retries", "0", "--memory-mb", "64", "--log-dir", str(tmp_path / "logs"))
    execution = json.loads(result.output[result.output.index("{"):])
    attempt = execution["tasks"][0]["attempts"][0]
    if "memory_note" in attempt:
        pytest.skip(attempt["memory_note"])
    assert result.exit_code == 2 and execution["failed_count"] == 1
    assert attempt["reason"] == "Memory limit of 64 MiB exceeded; the task attempt was stopped."
