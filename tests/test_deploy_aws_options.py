"""More of ``segany deploy aws`` against moto: waking a real-time endpoint scaled to zero,
rolling back an inference component, canary updates, weights from a local checkpoint (packaged
and uploaded once per digest) and a created execution role."""

from __future__ import annotations

import json
import tarfile
import threading
import time

from tests.test_deploy_aws import IMAGE, IMAGE_2, PHOTOS, ROLE, Recorder, deploy, segany, sm  # noqa: F401
from tests.test_deploy_aws import calls  # noqa: F401  (the fixture)


def test_invoke_waits_for_a_component_scaled_to_zero(moto_aws, calls):
    from deploy.aws.invoke import InvokeRequest, invoke
    from deploy.aws.session import Clients

    assert deploy("--min-instances", "0", mode="realtime")[0] == 0
    client = sm(moto_aws)
    client.update_inference_component_runtime_config(InferenceComponentName="sam", DesiredRuntimeConfig={"CopyCount": 0})
    client.describe_inference_component(InferenceComponentName="sam")  # moto: the copy goes
    assert client.describe_inference_component(InferenceComponentName="sam")["RuntimeConfig"]["CurrentCopyCount"] == 0

    def wake() -> None:  # what the NoCapacityInvocationFailures alarm's step policy does, minutes later in AWS
        deadline = time.monotonic() + 30
        while not calls.params("InvokeEndpoint") and time.monotonic() < deadline:  # the first refusal
            time.sleep(0.05)
        time.sleep(1.0)
        waker = moto_aws.client("sagemaker")
        waker.update_inference_component_runtime_config(InferenceComponentName="sam", DesiredRuntimeConfig={"CopyCount": 1})
        waker.describe_inference_component(InferenceComponentName="sam")
        waker.describe_inference_component(InferenceComponentName="sam")

    threading.Thread(target=wake, daemon=True).start()
    result = invoke(InvokeRequest("sam", PHOTOS / "dog.jpg", points=[[1, 2]], labels=[1], poll_s=0.5), Clients())
    sent = calls.params("InvokeEndpoint")
    assert len(sent) >= 2 and all(p["InferenceComponentName"] == "sam" for p in sent)
    assert result.waited_s >= 1.0 and result.how == "inline json"


def test_rollback_of_an_inference_component_returns_its_model(moto_aws, calls):
    assert deploy("--min-instances", "0", mode="realtime")[0] == 0
    first = sm(moto_aws).describe_inference_component(InferenceComponentName="sam")["Specification"]["ModelName"]
    assert deploy("--min-instances", "0", mode="realtime", image=IMAGE_2)[0] == 0
    second = sm(moto_aws).describe_inference_component(InferenceComponentName="sam")["Specification"]["ModelName"]
    assert second != first
    code, out = segany("status", "aws", "--endpoint", "sam")
    assert code == 0 and out.count("  <- serving") == 1 and second.removeprefix("sam-") in out.split("<- serving")[0].splitlines()[-1]
    calls.calls.clear()
    code, out = segany("deploy", "aws", "--rollback", "--endpoint", "sam", "--poll-s", "1")
    assert code == 0, out
    assert calls.changing() == ["UpdateInferenceComponent"]
    assert sm(moto_aws).describe_inference_component(InferenceComponentName="sam")["Specification"]["ModelName"] == first


def test_canary_update_with_its_traffic_steps(moto_aws, calls):
    assert deploy(mode="realtime")[0] == 0
    code, out = deploy("--deployment", "canary", "--traffic-percent", "20", "--wait-s", "120", mode="realtime", image=IMAGE_2)
    assert code == 0, out
    (update,) = calls.params("UpdateEndpoint")
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {"Type": "CANARY", "WaitIntervalInSeconds": 120,
                                                     "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}}
    assert update["RetainAllVariantProperties"] is True  # the same instance type: keep autoscaling's count
    described = sm(moto_aws).describe_endpoint(EndpointName="sam")
    assert described["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"


def test_a_local_checkpoint_is_packaged_and_uploaded_once(moto_aws, calls, tiny_checkpoint):
    code, out = deploy("--checkpoint", str(tiny_checkpoint), "--bucket", "weights", mode="realtime")
    assert code == 0, out
    (upload,) = [p for n, p in calls.calls if n == "PutObject" or n == "CreateMultipartUpload"][:1]
    key = upload["Key"]
    assert key.startswith("segany/models/") and key.endswith("/model.tar.gz")
    model = calls.params("CreateModel")[0]["PrimaryContainer"]
    assert model["ModelDataUrl"] == f"s3://weights/{key}" and "SEGANY_CHECKPOINT" not in model["Environment"]
    archive = moto_aws.client("s3").get_object(Bucket="weights", Key=key)["Body"].read()
    import io

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        (member,) = tar.getmembers()
        assert tar.extractfile(member).read() == tiny_checkpoint.read_bytes()
    calls.calls.clear()
    assert deploy("--checkpoint", str(tiny_checkpoint), "--bucket", "weights", mode="realtime")[0] == 0
    assert calls.changing() == []  # the same digest: nothing uploaded, nothing deployed again


def test_create_role_makes_a_least_privilege_role(moto_aws, calls):
    moto_aws.client("s3").create_bucket(Bucket="results")
    code, out = segany("deploy", "aws", "--mode", "async", "--endpoint", "sam", "--image", IMAGE, "--model", "tiny",
                       "--create-role", "--output", "s3://results/sam", "--poll-s", "1")
    assert code == 0, out
    (role,) = calls.params("CreateRole")
    assert role["RoleName"] == "sam-sagemaker"
    assert json.loads(role["AssumeRolePolicyDocument"])["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    policy = json.loads(calls.params("PutRolePolicy")[0]["PolicyDocument"])
    resources = json.dumps(policy)
    assert "repository/segment-anywhere" in resources and "arn:aws:s3:::results/sam/*" in resources
    assert '"Resource": "*"' not in resources.replace('"ecr:GetAuthorizationToken", "Resource": "*"', "").replace(
        '"cloudwatch:PutMetricData", "Resource": "*"', "")
    assert calls.params("CreateModel")[0]["ExecutionRoleArn"] == "arn:aws:iam::123456789012:role/sam-sagemaker"
    calls.calls.clear()
    assert segany("deploy", "aws", "--mode", "async", "--endpoint", "sam", "--image", IMAGE, "--model", "tiny",
                  "--create-role", "--output", "s3://results/sam", "--poll-s", "1")[0] == 0
    assert calls.changing() == []


def test_destroy_dry_run_lists_everything_and_outputs_go_only_when_asked(moto_aws, calls):
    s3 = moto_aws.client("s3")
    s3.create_bucket(Bucket="results")
    assert deploy("--output", "s3://results/sam", mode="async")[0] == 0
    s3.put_object(Bucket="results", Key="sam/results/one.out", Body=b"{}")
    s3.put_object(Bucket="results", Key="elsewhere/keep", Body=b"x")
    calls.calls.clear()
    code, out = segany("destroy", "aws", "--endpoint", "sam", "--dry-run", "--delete-outputs")
    assert code == 0 and calls.changing() == []
    for line in ("application-autoscaling.delete_scaling_policy", "application-autoscaling.deregister_scalable_target",
                 "cloudwatch.delete_alarms", "sagemaker.delete_endpoint", "sagemaker.delete_endpoint_config",
                 "sagemaker.delete_model", "s3-prefix.delete_prefix"):
        assert line in out, line
    code, out = segany("destroy", "aws", "--endpoint", "sam", "--poll-s", "1")
    assert code == 0 and "async results kept in s3://results/sam" in out
    assert s3.list_objects_v2(Bucket="results")["KeyCount"] == 2
    assert moto_aws.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    # outputs go with --delete-outputs: deploy again, destroy with it
    assert deploy("--output", "s3://results/sam", mode="async")[0] == 0
    assert segany("destroy", "aws", "--endpoint", "sam", "--delete-outputs", "--poll-s", "1")[0] == 0
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"]] == ["elsewhere/keep"]
