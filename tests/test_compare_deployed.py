"""``segany compare --aws-endpoint / --gcp-service``: deployed targets through the invoke code of
``segany invoke aws|gcp``. The SageMaker control plane is moto (the endpoint, its config and tags);
its runtime, and the Cloud Run service, are the emulators over one real tiny-model server, so
every answer is the real server's. ``--prices live`` without credentials keeps the table and says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from deploy.compare.runner import Served
from deploy.emulate import build
from deploy.emulate.lifecycle import Instance
from tests.test_emulate import started_instance
from tests.test_compare_run import IMAGES, WORKLOAD

pytest.importorskip("matplotlib")
pytest.importorskip("uvicorn")
pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def instance(tiny_checkpoint: Path, _moto_server: str, _fake_gcs_server: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from started_instance("sagemaker-serverless", tiny_checkpoint, _moto_server, _fake_gcs_server,
                                tmp_path_factory.mktemp("compare-deployed"),
                                SEGANY_MAX_IMAGE_PIXELS="64000000")  # a 12-megapixel photo


def _serverless_endpoint(sm: Any) -> None:
    role = "arn:aws:iam::123456789012:role/segany-sagemaker"
    sm.create_model(ModelName="sam-r1", ExecutionRoleArn=role,
                    PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sam:1"})
    sm.create_endpoint_config(EndpointConfigName="sam-r1", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "sam-r1", "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}])
    arn = sm.create_endpoint(EndpointName="sam", EndpointConfigName="sam-r1")["EndpointArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "segany:mode", "Value": "serverless"}])


def test_compare_runs_the_workload_against_deployed_targets(instance: Instance, moto_aws: Any,
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deploy.compare.command import compare

    if not (IMAGES / "truck.jpg").is_file():
        pytest.skip(f"no photos in {IMAGES}")
    _serverless_endpoint(moto_aws.client("sagemaker"))
    s3 = moto_aws.client("s3")
    s3.create_bucket(Bucket="uploads")
    workload = tmp_path / "workload.json"
    workload.write_text(json.dumps(WORKLOAD))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google.auth.default: no metadata server to wait for here
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    out = tmp_path / "report"
    with Served(build("sagemaker-serverless", instance, endpoint="sam")) as runtime, \
            Served(build("cloudrun", instance)) as service:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        result = CliRunner().invoke(compare, [
            "--workload", str(workload), "--targets", "none", "--aws-endpoint", "sam", "--aws-upload", "s3://uploads/in",
            "--gcp-service", service.url, "--gcp-no-auth", "--requests", "3", "--idle-s", "0.1",
            "--images-dir", str(tmp_path / "images"), "--prices", "live", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    runs = {t["target"]: t for t in data["run"]["targets"]}
    aws, gcp = runs["aws:sam"], runs[f"gcp:{service.url}"]
    assert (aws["platform"], aws["deployed"], gcp["platform"], gcp["deployed"]) == ("sagemaker-serverless", True, "cloudrun", True)
    assert [(r["kind"], r["image"], r["ok"], r["workaround"]) for r in aws["records"]] == [

        ("point", "truck", True, None), ("point_cached", "truck", True, "image_id reuse"),
        ("point", "phone-12mp", True, "S3 upload (image_url)")]  # 4.4+ MB: over Serverless' 4 MiB inline
    assert [(r["image"], r["ok"], r["workaround"]) for r in gcp["records"]] == [
        ("truck", True, None), ("truck", True, "image_id reuse"), ("phone-12mp", True, None)]
    phone = (tmp_path / "images").glob("phone-12mp.*")
    uploaded = s3.list_objects_v2(Bucket="uploads", Prefix="in/")["Contents"]
    assert [o["Size"] for o in uploaded] == [next(phone).stat().st_size]
    costs = data["costs"]
    assert "GB-s" in costs["aws:sam"]["formula"] or "GB-second" in costs["aws:sam"]["formula"]
    assert data["prices"]["mode"] == "live" and any("table kept" in n for n in data["prices"]["notes"])
    text = (out / "report.md").read_text()
    assert "Deployed: aws:sam (a deployed sagemaker-serverless (endpoint sam in us-east-1)" in text
    assert "prices: AWS Price List API: 0 price(s) read live" in text


def test_compare_refuses_a_service_name_without_where(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deploy.compare.command import compare

    result = CliRunner().invoke(compare, ["--targets", "none", "--gcp-service", "sam", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "give --gcp-project and --gcp-region, or the service's URL" in result.output
