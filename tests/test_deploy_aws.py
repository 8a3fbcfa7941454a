"""``segany deploy/invoke/status/destroy aws`` end to end against moto in server mode (with the
SageMaker extension of tests/fakes/moto_sagemaker.py for what moto lacks), through the real CLI
and real boto3 calls. Images are given by ``--image`` (an ECR reference); the push itself is
tested against a local registry (tests/test_registry_push.py, marker ``registry``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy.cli import main

ROLE = "arn:aws:iam::123456789012:role/sam-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/segment-anywhere:cpu-vit_h"
IMAGE_2 = "123456789012.dkr.ecr.us-east-1.amazonaws.com/segment-anywhere:cpu-vit_h-2"
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "images"


def segany(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def deploy(*extra: str, mode: str = "serverless", image: str = IMAGE) -> tuple[int, str]:
    return segany("deploy", "aws", "--mode", mode, "--endpoint", "sam", "--image", image, "--model", "tiny",
                  "--role-arn", ROLE, "--poll-s", "1", *extra)


class Recorder:
    """Every request boto3 sends, by operation (botocore's before-call event), for asserting on
    the requests field by field."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import boto3

        self.calls: list[tuple[str, dict]] = []
        original = boto3.session.Session.client

        def client(session, *args, **kwargs):  # type: ignore[no-untyped-def]
            made = original(session, *args, **kwargs)
            made.meta.events.register("provide-client-params.*.*", self._record)
            return made

        monkeypatch.setattr(boto3.session.Session, "client", client)

    def _record(self, params: dict, model, **_: object) -> None:  # type: ignore[no-untyped-def]
        def plain(value):  # type: ignore[no-untyped-def]
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)

        self.calls.append((model.name, json.loads(json.dumps(params, default=plain))))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def changing(self) -> list[str]:
        return [n for n in self.names() if not n.startswith(("Describe", "List", "Get", "Head"))]

    def params(self, name: str) -> list[dict]:
        return [p for n, p in self.calls if n == name]


@pytest.fixture
def calls(moto_aws, monkeypatch):  # type: ignore[no-untyped-def]
    return Recorder(monkeypatch)


def sm(moto_aws):  # type: ignore[no-untyped-def]
    return moto_aws.client("sagemaker")


def test_serverless_deploy_rerun_update_rollback_status_destroy(moto_aws, calls):
    code, out = deploy("--memory-mb", "2048", "--max-concurrency", "3")
    assert code == 0, out
    model = calls.params("CreateModel")[0]
    release = model["ModelName"].removeprefix("sam-")
    assert len(release) == 10 and model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"] == {"Image": IMAGE, "Environment": {"SEGANY_SAGEMAKER_MODE": "serverless", "SEGANY_MODEL": "tiny"}}
    assert {t["Key"]: t["Value"] for t in model["Tags"]} == {
        "segany:app": "segment-anywhere", "segany:deployment": "sam", "segany:release": release, "segany:mode": "serverless"}
    (config,) = calls.params("CreateEndpointConfig")
    assert config["EndpointConfigName"] == f"sam-{release}"
    assert config["ProductionVariants"] == [{"VariantName": "AllTraffic", "ModelName": f"sam-{release}",
                                             "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 3}}]
    assert calls.params("CreateEndpoint")[0]["EndpointConfigName"] == f"sam-{release}"
    assert sm(moto_aws).describe_endpoint(EndpointName="sam")["EndpointStatus"] == "InService"
    assert "segany invoke aws --endpoint sam" in out and "per GB-second" in out and "invoke_endpoint(" in out
    alarms = {p["AlarmName"]: p for p in calls.params("PutMetricAlarm")}
    assert set(alarms) == {"sam-5xx", "sam-latency"} and alarms["sam-5xx"]["MetricName"] == "Invocation5XXErrors"

    # the same release again: nothing that changes anything
    calls.calls.clear()
    code, out = deploy("--memory-mb", "2048", "--max-concurrency", "3")
    assert code == 0 and calls.changing() == [], calls.changing()
    assert "unchanged" in out

    # a new release: new versioned names, the endpoint updated blue/green with the rollback alarms
    calls.calls.clear()
    code, out = deploy("--memory-mb", "2048", "--max-concurrency", "3", image=IMAGE_2)
    assert code == 0, out
    release_2 = calls.params("CreateModel")[0]["ModelName"].removeprefix("sam-")
    assert release_2 != release
    (update,) = calls.params("UpdateEndpoint")
    assert update["EndpointConfigName"] == f"sam-{release_2}"
    assert update["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "sam-5xx"}, {"AlarmName": "sam-latency"}]}
    assert "RetainAllVariantProperties" not in update  # serverless: no instance counts to keep
    assert sm(moto_aws).describe_endpoint(EndpointName="sam")["EndpointConfigName"] == f"sam-{release_2}"
    assert {m["ModelName"] for m in sm(moto_aws).list_models()["Models"]} == {f"sam-{release}", f"sam-{release_2}"}

    code, out = segany("status", "aws", "--endpoint", "sam")
    (line,) = [line for line in out.splitlines() if line.strip().startswith(f"{release_2}  sam-{release_2}")]
    assert code == 0 and line.endswith("<- serving"), out

    # rollback: dry run first (no call that changes anything), then for real
    calls.calls.clear()
    code, out = segany("deploy", "aws", "--rollback", "--endpoint", "sam", "--dry-run")
    assert code == 0 and f'"EndpointConfigName": "sam-{release}"' in out and calls.changing() == []
    code, out = segany("deploy", "aws", "--rollback", "--endpoint", "sam", "--poll-s", "1")
    assert code == 0, out
    assert sm(moto_aws).describe_endpoint(EndpointName="sam")["EndpointConfigName"] == f"sam-{release}"
    code, out = segany("deploy", "aws", "--rollback", "--endpoint", "sam", "--poll-s", "1")
    assert code == 2  # the first release has nothing before it

    # destroy: everything of ours, nothing else
    other = sm(moto_aws)
    other.create_model(ModelName="sam-not-ours", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    code, out = segany("destroy", "aws", "--endpoint", "sam", "--poll-s", "1")
    assert code == 0, out
    assert [m["ModelName"] for m in other.list_models()["Models"]] == ["sam-not-ours"]
    assert other.list_endpoint_configs()["EndpointConfigs"] == [] and other.list_endpoints()["Endpoints"] == []
    assert moto_aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []


def test_failed_update_leaves_the_old_release_serving_and_cleans_up(moto_aws, calls):
    assert deploy()[0] == 0
    first = sm(moto_aws).describe_endpoint(EndpointName="sam")["EndpointConfigName"]
    moto_aws.fakes.fail_next_update("sam", "The primary container did not pass the ping health check.")
    code, out = deploy(image=IMAGE_2)
    assert code == 2
    assert "failed" in out and "ping health check" in out and f"release {first.removeprefix('sam-')} keeps serving" in out
    client = sm(moto_aws)
    assert client.describe_endpoint(EndpointName="sam")["EndpointConfigName"] == first
    assert [c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]] == [first]
    assert [m["ModelName"] for m in client.list_models()["Models"]] == [first]


def test_realtime_autoscaling_and_instance_change(moto_aws, calls):
    code, out = deploy("--instance-type", "ml.m5.xlarge", "--min-instances", "1", "--max-instances", "3", mode="realtime")
    assert code == 0, out
    variant = calls.params("CreateEndpointConfig")[0]["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.xlarge" and variant["InitialInstanceCount"] == 1
    assert 60 <= variant["ContainerStartupHealthCheckTimeoutInSeconds"] <= 3600
    (target,) = calls.params("RegisterScalableTarget")
    assert target == {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/sam/variant/AllTraffic",
                      "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": 1, "MaxCapacity": 3}
    (policy,) = calls.params("PutScalingPolicy")
    assert policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    assert "per instance-hour" in out and "even when idle" in out
    calls.calls.clear()
    assert deploy("--instance-type", "ml.m5.xlarge", "--min-instances", "1", "--max-instances", "3", mode="realtime")[0] == 0
    assert calls.changing() == []
    # another instance type: scaling goes before the update and comes back after (endpoint-scaling-update.html)
    code, out = deploy("--instance-type", "ml.c5.2xlarge", "--min-instances", "1", "--max-instances", "3", mode="realtime")
    assert code == 0, out
    order = calls.changing()
    assert order.index("DeregisterScalableTarget") < order.index("UpdateEndpoint") < order.index("RegisterScalableTarget")


def test_realtime_scale_to_zero_uses_an_inference_component(moto_aws, calls):
    code, out = deploy("--min-instances", "0", "--max-instances", "2", mode="realtime")
    assert code == 0, out
    config = calls.params("CreateEndpointConfig")[0]
    variant = config["ProductionVariants"][0]
    assert "ModelName" not in variant and config["ExecutionRoleArn"] == ROLE
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 2}
    (component,) = calls.params("CreateInferenceComponent")
    assert component["EndpointName"] == "sam" and component["Specification"]["ModelName"].startswith("sam-")
    targets = calls.params("RegisterScalableTarget")
    assert targets == [{"ServiceNamespace": "sagemaker", "ResourceId": "inference-component/sam",
                        "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount", "MinCapacity": 0, "MaxCapacity": 2}]
    step = next(p for p in calls.params("PutScalingPolicy") if p["PolicyType"] == "StepScaling")
    (alarm,) = calls.params("PutMetricAlarm")
    assert alarm["MetricName"] == "NoCapacityInvocationFailures" and alarm["Dimensions"] == [
        {"Name": "InferenceComponentName", "Value": "sam"}]
    policies = moto_aws.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId="inference-component/sam")["ScalingPolicies"]
    policy_arn = next(p["PolicyARN"] for p in policies if p["PolicyName"] == step["PolicyName"])
    assert alarm["AlarmActions"] == [policy_arn]
    assert "nothing while scaled to zero" in out and "requests fail meanwhile" in out
    # a new release updates the component's model, not the endpoint
    calls.calls.clear()
    assert deploy("--min-instances", "0", "--max-instances", "2", mode="realtime", image=IMAGE_2)[0] == 0
    assert "UpdateInferenceComponent" in calls.changing() and "UpdateEndpoint" not in calls.changing()
    code, out = segany("destroy", "aws", "--endpoint", "sam", "--poll-s", "1")
    assert code == 0, out
    assert sm(moto_aws).list_inference_components()["InferenceComponents"] == []


def test_async_scales_to_zero_and_invokes_through_s3(moto_aws, calls, tmp_path):
    moto_aws.client("s3").create_bucket(Bucket="results")
    code, out = deploy("--output", "s3://results/sam", "--max-instances", "2", mode="async")
    assert code == 0, out
    config = calls.params("CreateEndpointConfig")[0]
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://results/sam/results", "S3FailurePath": "s3://results/sam/failures"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1}}
    assert config["ProductionVariants"][0]["ModelName"].startswith("sam-")
    assert calls.params("CreateModel")[0]["PrimaryContainer"]["Environment"]["SEGANY_CUSTOM_ATTRIBUTES"] == "task=everything"
    assert calls.params("RegisterScalableTarget")[0]["MinCapacity"] == 0
    tracking = next(p for p in calls.params("PutScalingPolicy") if p["PolicyType"] == "TargetTrackingScaling")
    assert tracking["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["MetricName"] == "ApproximateBacklogSizePerInstance"
    wake = next(p for p in calls.params("PutMetricAlarm") if p["AlarmName"] == "sam-wake")
    assert wake["MetricName"] == "HasBacklogWithoutCapacity"

    calls.calls.clear()
    answer = tmp_path / "answer.json"
    code, out = segany("invoke", "aws", "--endpoint", "sam", "--task", "everything", str(PHOTOS / "dog.jpg"), "--out", str(answer))
    assert code == 0, out
    (request,) = calls.params("InvokeEndpointAsync")
    assert request["InputLocation"].startswith("s3://results/sam/inputs/") and request["CustomAttributes"] == "task=everything;output=rle"
    bucket, key = request["InputLocation"][5:].split("/", 1)
    assert moto_aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == (PHOTOS / "dog.jpg").read_bytes()
    assert json.loads(answer.read_text()) == {"default": "response"}  # what moto's runtime wrote to S3 for it


def test_invoke_realtime_inline_raw_and_upload(moto_aws, calls, tmp_path):
    assert deploy(mode="realtime")[0] == 0
    moto_aws.client("s3").create_bucket(Bucket="uploads")
    code, _ = segany("invoke", "aws", "--endpoint", "sam", str(PHOTOS / "dog.jpg"), "--points", "[[10, 20]]")
    assert code == 0
    (inline,) = calls.params("InvokeEndpoint")
    body = json.loads(inline["Body"])
    assert inline["ContentType"] == "application/json" and body["points"] == [[10, 20]] and body["labels"] == [1]
    big = tmp_path / "big.jpg"
    big.write_bytes((PHOTOS / "dog.jpg").read_bytes() + b"\0" * (5 * 2**20))  # 4.5 MB+ base64 over 6 MB, raw under it
    calls.calls.clear()
    assert segany("invoke", "aws", "--endpoint", "sam", str(big), "--points", "[[10, 20]]")[0] == 0
    (raw,) = calls.params("InvokeEndpoint")
    assert raw["ContentType"] == "image/jpeg" and raw["CustomAttributes"] == "task=segment;output=rle;points=[[10,20]];labels=[1]"
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff" * (7 * 2**20))
    code, out = segany("invoke", "aws", "--endpoint", "sam", str(huge))
    assert code == 2 and "over realtime's 6 MiB request cap" in out and "--upload" in out
    calls.calls.clear()
    assert segany("invoke", "aws", "--endpoint", "sam", str(huge), "--upload", "s3://uploads/in")[0] == 0
    (sent,) = calls.params("InvokeEndpoint")
    assert json.loads(sent["Body"])["image_url"].startswith("s3://uploads/in/")


def test_batch_runs_a_transform_job_and_writes_a_manifest(moto_aws, calls):
    s3 = moto_aws.client("s3")
    s3.create_bucket(Bucket="photos")
    for photo in PHOTOS.glob("*.jpg"):
        s3.put_object(Bucket="photos", Key=f"in/{photo.name}", Body=photo.read_bytes())
    code, out = deploy("--input", "s3://photos/in", "--output", "s3://photos/out", mode="batch")
    assert code == 0, out
    (job,) = calls.params("CreateTransformJob")
    name = job["TransformJobName"]
    assert name.startswith("sam-") and name.endswith("-01")
    assert job["TransformOutput"]["S3OutputPath"] == f"s3://photos/out/{name}/"
    assert job["Environment"] == {"SEGANY_CUSTOM_ATTRIBUTES": "task=everything"} and job["MaxPayloadInMB"] == 6
    manifest = json.loads(s3.get_object(Bucket="photos", Key=f"out/{name}/manifest.json")["Body"].read())
    assert manifest["job"] == name and manifest["status"] == "Completed"
    # moto writes no outputs: every input is listed as failed, with the reason
    assert sorted(item["input"] for item in manifest["failed"]) == sorted(p.name for p in PHOTOS.glob("*.jpg"))
    calls.calls.clear()
    code, out = deploy("--input", "s3://photos/in", "--output", "s3://photos/out", mode="batch")
    assert code == 0 and "already completed" in out and calls.changing() == []


def test_dry_run_makes_no_call_and_works_offline(moto_aws, calls, monkeypatch):
    code, out = deploy("--dry-run", mode="realtime")
    assert code == 0 and calls.changing() == []
    assert "sagemaker.create_model" in out and "sagemaker.create_endpoint" in out and ROLE in out
    assert "testing" not in out  # the credentials never appear
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out = deploy("--dry-run", mode="realtime")
    assert code == 0 and "no AWS credentials were found" in out
    code, out = deploy(mode="realtime")
    assert code == 2 and "no AWS credentials" in out


@pytest.mark.parametrize("args, message", [
    (("--memory-mb", "7000"), "--memory-mb 7000: one of 1024, 2048"),
    (("--max-concurrency", "201"), "1-200"),
    (("--max-concurrency", "2", "--provisioned-concurrency", "3"), "--provisioned-concurrency 3"),
    (("--instance-type", "ml.m5.xlarge"), "do not apply to --mode serverless"),
    (("--model", "vit_h", "--memory-mb", "3072"), "too small for vit_h"),
    (("--model", "vit_h", "--checkpoint", "s3://w/sam_vit_h.pth"), "segany build --bake-weights"),
    (("--endpoint", "bad_name"), "letters, digits and hyphens"),
    (("--bogus-key-in-file",), None),
])
def test_bad_settings_fail_before_any_call(moto_aws, calls, args, message, tmp_path):
    if args == ("--bogus-key-in-file",):
        config = tmp_path / "deploy.toml"
        config.write_text('[aws]\nmode = "serverless"\nendpoint = "sam"\nimage = "x"\nrole_arn = "%s"\nmemroy_mb = 2048\n' % ROLE)
        code, out = segany("deploy", "aws", "--config", str(config))
        message = "memroy_mb: unknown setting"
    else:
        code, out = deploy(*args)
    assert code == 2 and message in out, out
    assert calls.changing() == []


def test_config_file_with_flags_over_it(moto_aws, calls, tmp_path):
    config = tmp_path / "deploy.toml"
    config.write_text(f'[aws]\nmode = "serverless"\nendpoint = "sam"\nimage = "{IMAGE}"\nrole_arn = "{ROLE}"\n'
                      'model = "tiny"\nmemory_mb = 2048\nmax_concurrency = 4\npoll_s = 1\n')
    code, out = segany("deploy", "aws", "--config", str(config), "--max-concurrency", "6")
    assert code == 0, out
    serverless = calls.params("CreateEndpointConfig")[0]["ProductionVariants"][0]["ServerlessConfig"]
    assert serverless == {"MemorySizeInMB": 2048, "MaxConcurrency": 6}


def test_an_endpoint_not_made_by_segany_is_left_alone(moto_aws, calls):
    client = sm(moto_aws)
    client.create_model(ModelName="theirs", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    client.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "theirs", "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1}])
    client.create_endpoint(EndpointName="sam", EndpointConfigName="theirs")
    code, out = deploy(mode="realtime")
    assert code == 2 and "not made by segany" in out
    code, out = segany("destroy", "aws", "--endpoint", "sam", "--poll-s", "1")
    assert code == 0 and "left alone" in out
    assert client.describe_endpoint(EndpointName="sam")["EndpointConfigName"] == "theirs"


def oci_archive(path: Path, labels: dict[str, str]) -> Path:
    """A one-layer OCI archive whose config carries ``labels`` (what segany build writes)."""
    import hashlib
    import io
    import tarfile

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_digest, layer = blob(b"a layer" * 100)
    config_digest, config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                                             "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode())
    manifest_digest, manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}]}).encode())
    index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                          "digest": manifest_digest, "size": len(manifest)}]}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index),
                           *[(f"blobs/sha256/{d.split(':')[1]}", b) for d, b in
                             ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_image_labels_decide_what_serverless_accepts(moto_aws, calls, tmp_path, monkeypatch):
    """A local image is read for its labels before anything is pushed: a cuda image or a model
    converted at start is refused on serverless; a baked vit_h plans the push and the model by tag."""
    def run(labels: dict[str, str], *extra: str) -> tuple[int, str]:
        archive = oci_archive(tmp_path / "image.tar", labels)
        return segany("deploy", "aws", "--mode", "serverless", "--endpoint", "sam", "--oci-archive", str(archive),
                      "--role-arn", ROLE, "--dry-run", *extra)

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # offline: nothing asked of a registry or of AWS
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out = run({"io.segment-anywhere.device": "cuda", "io.segment-anywhere.model": "vit_h",
                     "io.segment-anywhere.weights": "checkpoint"})
    assert code == 2 and "no GPU" in out
    code, out = run({"io.segment-anywhere.device": "cpu", "io.segment-anywhere.weights": "none"}, "--model", "vit_b")
    assert code == 2 and "converted at start" in out and "--bake-weights" in out
    code, out = run({"io.segment-anywhere.device": "cpu", "io.segment-anywhere.model": "vit_h",
                     "io.segment-anywhere.weights": "converted"})
    assert code == 0, out
    assert "registry.push" in out and '"MemorySizeInMB": 5120' in out and '"SEGANY_MODEL": "vit_h"' in out
    assert "123456789012.dkr.ecr.us-east-1.amazonaws.com/segment-anywhere:sha-" in out
    assert calls.changing() == []
