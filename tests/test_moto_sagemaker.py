"""The moto SageMaker extension (tests/fakes/moto_sagemaker.py and friends), through real boto3
clients against moto in server mode (the ``moto_aws`` fixture)."""

from __future__ import annotations

import datetime as dt
import urllib.request
from typing import Any

import pytest

pytest.importorskip("moto.server")
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/segany-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/segany:1"
IC_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"


@pytest.fixture
def sm(moto_aws: Any) -> Any:
    return moto_aws.client("sagemaker")


@pytest.fixture
def aas(moto_aws: Any) -> Any:
    return moto_aws.client("application-autoscaling")


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


def model(sm: Any, name: str = "sam") -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})


def config(sm: Any, name: str, count: int = 1, instance: str = "ml.g5.xlarge", model_name: str | None = "sam",
           **extra: Any) -> None:
    variant = {"VariantName": "AllTraffic", "InstanceType": instance, "InitialInstanceCount": count, **extra}
    if model_name:
        variant["ModelName"] = model_name
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], ExecutionRoleArn=ROLE)


def wait(sm: Any, name: str, tries: int = 10) -> dict:
    for _ in range(tries):
        described = sm.describe_endpoint(EndpointName=name)
        if described["EndpointStatus"] not in ("Creating", "Updating"):
            return described
    raise AssertionError(f"{name} still {described['EndpointStatus']}")


def endpoint(sm: Any, name: str = "seg", cfg: str = "cfg-1", **config_args: Any) -> dict:
    if not sm.list_models()["Models"]:
        model(sm)
    config(sm, cfg, **config_args)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg)
    return wait(sm, name)


# --- UpdateEndpoint ---------------------------------------------------------------------------


def test_update_goes_updating_on_the_old_config_then_in_service_on_the_new(sm: Any) -> None:
    endpoint(sm)
    config(sm, "cfg-2", count=2, instance="ml.g6.2xlarge")
    deployment = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE",
                                                                            "WaitIntervalInSeconds": 0}}}
    arn = sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-2", DeploymentConfig=deployment)["EndpointArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/seg"
    updating = sm.describe_endpoint(EndpointName="seg")
    assert updating["EndpointStatus"] == "Updating"
    assert updating["EndpointConfigName"] == "cfg-1"
    assert updating["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert updating["PendingDeploymentSummary"]["EndpointConfigName"] == "cfg-2"
    assert updating["PendingDeploymentSummary"]["ProductionVariants"][0]["InstanceType"] == "ml.g6.2xlarge"
    assert sm.list_endpoints()["Endpoints"][0]["EndpointStatus"] == "Updating"
    done = sm.describe_endpoint(EndpointName="seg")
    assert done["EndpointStatus"] == "InService"
    assert done["EndpointConfigName"] == "cfg-2"
    (variant,) = done["ProductionVariants"]
    assert variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 2
    assert done["LastDeploymentConfig"] == deployment
    assert "PendingDeploymentSummary" not in done and "FailureReason" not in done


@pytest.mark.parametrize("describes", [0, 3])
def test_update_lasts_the_configured_number_of_describes(moto_aws: Any, sm: Any, describes: int) -> None:
    endpoint(sm)
    config(sm, "cfg-2")
    moto_aws.fakes.settings.update_describes = describes
    sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-2")
    statuses = [sm.describe_endpoint(EndpointName="seg")["EndpointStatus"] for _ in range(describes + 1)]
    assert statuses == ["Updating"] * describes + ["InService"]


def test_failed_update_ends_in_service_on_the_old_config_with_a_reason(moto_aws: Any, sm: Any) -> None:
    endpoint(sm)
    config(sm, "cfg-2", count=3)
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    moto_aws.fakes.fail_next_update("seg", reason)
    sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-2")
    assert sm.describe_endpoint(EndpointName="seg")["EndpointStatus"] == "Updating"
    after = sm.describe_endpoint(EndpointName="seg")
    assert (after["EndpointStatus"], after["EndpointConfigName"]) == ("InService", "cfg-1")
    assert after["FailureReason"] == reason
    assert after["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    # The fault was used up: the next update goes through and clears the reason.
    sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-2")
    assert "FailureReason" not in sm.describe_endpoint(EndpointName="seg")
    final = wait(sm, "seg")
    assert (final["EndpointConfigName"], final["ProductionVariants"][0]["CurrentInstanceCount"]) == ("cfg-2", 3)


def test_update_keeps_live_variant_properties_when_asked(sm: Any) -> None:
    endpoint(sm)
    sm.update_endpoint_weights_and_capacities(
        EndpointName="seg", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 4}])
    config(sm, "cfg-2", count=2)
    sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-2", RetainAllVariantProperties=True)
    assert wait(sm, "seg")["ProductionVariants"][0]["DesiredInstanceCount"] == 4
    config(sm, "cfg-3", count=2)
    sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-3", RetainAllVariantProperties=True,
                       ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredInstanceCount"}])
    assert wait(sm, "seg")["ProductionVariants"][0]["DesiredInstanceCount"] == 2


def test_update_endpoint_errors(moto_aws: Any, sm: Any) -> None:
    endpoint(sm)
    config(sm, "cfg-2")
    assert error_of(sm.update_endpoint, EndpointName="nope", EndpointConfigName="cfg-2") == (
        "ValidationException", 'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/nope".')
    code, message = error_of(sm.update_endpoint, EndpointName="seg", EndpointConfigName="missing")
    assert code == "ValidationException" and message.startswith('Could not find endpoint configuration "arn:')
    sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-2")
    code, message = error_of(sm.update_endpoint, EndpointName="seg", EndpointConfigName="cfg-2")
    assert code == "ValidationException" and message.startswith("Cannot update in-progress endpoint")
    sm.create_endpoint(EndpointName="new", EndpointConfigName="cfg-2")
    assert error_of(sm.update_endpoint, EndpointName="new", EndpointConfigName="cfg-1")[1].startswith(
        "Cannot update in-progress endpoint")
    code, message = error_of(sm.update_endpoint, EndpointName="seg_1", EndpointConfigName="cfg-2")
    assert "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" in message


# --- CreateEndpoint / DeleteEndpoint ----------------------------------------------------------


def test_create_goes_creating_then_in_service(moto_aws: Any, sm: Any) -> None:
    model(sm)
    config(sm, "cfg-1")
    moto_aws.fakes.settings.create_describes = 2
    sm.create_endpoint(EndpointName="seg", EndpointConfigName="cfg-1")
    assert [sm.describe_endpoint(EndpointName="seg")["EndpointStatus"] for _ in range(3)] == [
        "Creating", "Creating", "InService"]
    code, message = error_of(sm.create_endpoint, EndpointName="seg", EndpointConfigName="cfg-1")
    assert message == 'Cannot create already existing endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/seg".'


def test_failed_create_ends_failed_and_only_delete_works(moto_aws: Any, sm: Any) -> None:
    model(sm)
    config(sm, "cfg-1")
    moto_aws.fakes.fail_next_create("seg", "Failed to extract model data archive for container")
    sm.create_endpoint(EndpointName="seg", EndpointConfigName="cfg-1")
    code, message = error_of(sm.delete_endpoint, EndpointName="seg")
    assert message.startswith("Cannot update in-progress endpoint")
    failed = wait(sm, "seg")
    assert (failed["EndpointStatus"], failed["FailureReason"]) == (
        "Failed", "Failed to extract model data archive for container")
    assert error_of(sm.update_endpoint, EndpointName="seg", EndpointConfigName="cfg-1")[0] == "ValidationException"
    sm.delete_endpoint(EndpointName="seg")
    missing = 'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/seg".'
    assert error_of(sm.describe_endpoint, EndpointName="seg")[1] == missing
    assert error_of(sm.delete_endpoint, EndpointName="seg")[1] == missing


# --- fields moto used to drop -----------------------------------------------------------------


def test_endpoint_config_and_endpoint_keep_what_aws_keeps(sm: Any) -> None:
    model(sm)
    variant = {"VariantName": "AllTraffic", "ModelName": "sam", "InstanceType": "ml.g5.xlarge",
               "InitialInstanceCount": 1,
               "ContainerStartupHealthCheckTimeoutInSeconds": 900, "ModelDataDownloadTimeoutInSeconds": 1200,
               "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 4},
               "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}}
    async_config = {"OutputConfig": {"S3OutputPath": "s3://bucket/out/"},
                    "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}
    sm.create_endpoint_config(EndpointConfigName="cfg-1", ProductionVariants=[variant], ExecutionRoleArn=ROLE,
                              AsyncInferenceConfig=async_config)
    described = sm.describe_endpoint_config(EndpointConfigName="cfg-1")
    assert described["ProductionVariants"] == [variant]
    assert (described["ExecutionRoleArn"], described["AsyncInferenceConfig"]) == (ROLE, async_config)
    sm.create_endpoint(EndpointName="seg", EndpointConfigName="cfg-1")
    live = wait(sm, "seg")
    assert live["ProductionVariants"] == [{
        "VariantName": "AllTraffic", "CurrentWeight": 1.0, "DesiredWeight": 1.0,
        "CurrentInstanceCount": 1, "DesiredInstanceCount": 1,
        "ManagedInstanceScaling": variant["ManagedInstanceScaling"], "RoutingConfig": variant["RoutingConfig"]}]
    assert live["AsyncInferenceConfig"] == async_config


def test_serverless_endpoint_reports_current_and_desired_serverless_config(sm: Any) -> None:
    model(sm)
    serverless = {"MemorySizeInMB": 6144, "MaxConcurrency": 20, "ProvisionedConcurrency": 2}
    sm.create_endpoint_config(EndpointConfigName="cfg-1", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "sam", "ServerlessConfig": serverless}])
    sm.create_endpoint(EndpointName="seg", EndpointConfigName="cfg-1")
    (variant,) = wait(sm, "seg")["ProductionVariants"]
    assert variant["CurrentServerlessConfig"] == variant["DesiredServerlessConfig"] == serverless
    assert "CurrentInstanceCount" not in variant


def test_current_instance_types_are_accepted(sm: Any) -> None:
    model(sm)
    for instance in ("ml.g5.xlarge", "ml.g6.4xlarge", "ml.m6i.large", "ml.c6i.2xlarge", "ml.c7i.xlarge"):
        name = "cfg-" + instance.replace(".", "-")
        config(sm, name, instance=instance)
        (variant,) = sm.describe_endpoint_config(EndpointConfigName=name)["ProductionVariants"]
        assert variant["InstanceType"] == instance


SERVERLESS = {"VariantName": "AllTraffic", "ModelName": "sam"}


REJECTED = [
    ({**SERVERLESS, "ServerlessConfig": {"MemorySizeInMB": 1500, "MaxConcurrency": 5}},
     "Value '1500' at 'MemorySizeInMB' failed to satisfy constraint: Member must satisfy enum value set"),
    ({**SERVERLESS, "ServerlessConfig": {"MemorySizeInMB": 7168, "MaxConcurrency": 5}},
     "Value '7168' at 'productionVariants.1.member.serverlessConfig.memorySizeInMB' failed to satisfy constraint: "
     "Member must have value less than or equal to 6144"),
    ({**SERVERLESS, "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 201}},
     "Value '201' at 'productionVariants.1.member.serverlessConfig.maxConcurrency' failed to satisfy constraint: "
     "Member must have value less than or equal to 200"),
    ({**SERVERLESS, "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5, "ProvisionedConcurrency": 6}},
     "ProvisionedConcurrency (6) must be less than or equal to MaxConcurrency (5)"),
    ({**SERVERLESS, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
      "ContainerStartupHealthCheckTimeoutInSeconds": 3601},
     "at 'productionVariants.1.member.containerStartupHealthCheckTimeoutInSeconds' failed to satisfy constraint: "
     "Member must have value less than or equal to 3600"),
    ({**SERVERLESS, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
      "ModelDataDownloadTimeoutInSeconds": 5000},
     "Member must have value less than or equal to 3600"),
    ({**SERVERLESS, "InstanceType": "ml.m5.bogus", "InitialInstanceCount": 1},
     "Value 'ml.m5.bogus' at 'productionVariants.1.member.instanceType' failed to satisfy constraint: "
     "Member must satisfy enum value set: [ml.t2.medium,"),
    ({**SERVERLESS, "VariantName": "all_traffic", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1},
     "Value 'all_traffic' at 'productionVariants.1.member.variantName' failed to satisfy constraint: "
     "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"),
]


def test_endpoint_config_values_aws_rejects(sm: Any) -> None:
    model(sm)
    for variant, expected in REJECTED:  # one moto reset for all the cases
        code, message = error_of(sm.create_endpoint_config, EndpointConfigName="cfg-1", ProductionVariants=[variant])
        assert code == "ValidationException" and expected in message, (variant, message)
    assert not sm.list_endpoint_configs()["EndpointConfigs"]


def test_names_aws_rejects(sm: Any) -> None:
    code, message = error_of(sm.create_model, ModelName="sam.v1", ExecutionRoleArn=ROLE,
                             PrimaryContainer={"Image": IMAGE})
    assert message == ("1 validation error detected: Value 'sam.v1' at 'modelName' failed to satisfy constraint: "
                       "Member must satisfy regular expression pattern: ^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?")
    model(sm)
    assert error_of(sm.create_model, ModelName="sam", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})[1] == (
        'Cannot create already existing model "arn:aws:sagemaker:us-east-1:123456789012:model/sam".')
    code, message = error_of(sm.create_endpoint_config, EndpointConfigName="x" * 64, ProductionVariants=[
        {"VariantName": "v", "ModelName": "sam", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])
    assert ("at 'endpointConfigName' failed to satisfy constraint: "
            "Member must have length less than or equal to 63") in message
    config(sm, "cfg-1")
    assert error_of(config, sm, "cfg-1")[1].startswith('Cannot create already existing endpoint configuration "arn:')


# --- inference components ---------------------------------------------------------------------


SPEC = {"ModelName": "sam", "Container": {"Image": IMAGE, "Environment": {"SEGANY_MODEL": "vit_b"}},
        "ComputeResourceRequirements": {"NumberOfCpuCoresRequired": 2.0, "MinMemoryRequiredInMb": 4096,
                                        "NumberOfAcceleratorDevicesRequired": 1.0},
        "StartupParameters": {"ContainerStartupHealthCheckTimeoutInSeconds": 600,
                              "ModelDataDownloadTimeoutInSeconds": 600}}


def ic_endpoint(sm: Any) -> None:
    endpoint(sm, model_name=None,
             ManagedInstanceScaling={"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 2},
             RoutingConfig={"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"})


def component(sm: Any, name: str = "sam-ic", copies: int = 2, **extra: Any) -> str:
    return sm.create_inference_component(InferenceComponentName=name, EndpointName="seg", VariantName="AllTraffic",
                                         Specification=SPEC, RuntimeConfig={"CopyCount": copies}, **extra)[
        "InferenceComponentArn"]


def test_inference_component_lifecycle(sm: Any) -> None:
    model(sm)
    ic_endpoint(sm)
    arn = component(sm, Tags=[{"Key": "app", "Value": "segany"}])
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:inference-component/sam-ic"
    creating = sm.describe_inference_component(InferenceComponentName="sam-ic")
    assert creating["InferenceComponentStatus"] == "Creating"
    assert creating["RuntimeConfig"] == {"DesiredCopyCount": 2, "CurrentCopyCount": 0}
    ready = sm.describe_inference_component(InferenceComponentName="sam-ic")
    assert ready["InferenceComponentStatus"] == "InService"
    assert ready["RuntimeConfig"] == {"DesiredCopyCount": 2, "CurrentCopyCount": 2}
    assert (ready["InferenceComponentArn"], ready["EndpointName"], ready["VariantName"]) == (arn, "seg", "AllTraffic")
    assert ready["EndpointArn"] == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/seg"
    spec = ready["Specification"]
    assert (spec["ModelName"], spec["ComputeResourceRequirements"], spec["StartupParameters"]) == (
        "sam", SPEC["ComputeResourceRequirements"], SPEC["StartupParameters"])
    assert spec["Container"]["DeployedImage"]["SpecifiedImage"] == IMAGE
    assert spec["Container"]["Environment"] == {"SEGANY_MODEL": "vit_b"}
    # tags through the generic tagging API, on the component's ARN
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "app", "Value": "segany"}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "test"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["app"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "test"}]
    # runtime config: Desired moves at once, Current once InService
    sm.update_inference_component_runtime_config(InferenceComponentName="sam-ic", DesiredRuntimeConfig={"CopyCount": 3})
    updating = sm.describe_inference_component(InferenceComponentName="sam-ic")
    assert (updating["InferenceComponentStatus"], updating["RuntimeConfig"]) == (
        "Updating", {"DesiredCopyCount": 3, "CurrentCopyCount": 2})
    assert sm.describe_inference_component(InferenceComponentName="sam-ic")["RuntimeConfig"]["CurrentCopyCount"] == 3
    # a new specification
    model(sm, "sam-2")
    sm.update_inference_component(InferenceComponentName="sam-ic", Specification={**SPEC, "ModelName": "sam-2"},
                                  RuntimeConfig={"CopyCount": 1})
    assert sm.describe_inference_component(InferenceComponentName="sam-ic")["InferenceComponentStatus"] == "Updating"
    updated = sm.describe_inference_component(InferenceComponentName="sam-ic")
    assert (updated["Specification"]["ModelName"], updated["RuntimeConfig"]["CurrentCopyCount"]) == ("sam-2", 1)
    # list, then delete
    component(sm, "other-ic", copies=1)
    listed = sm.list_inference_components(EndpointNameEquals="seg", SortBy="Name", SortOrder="Ascending")
    assert [c["InferenceComponentName"] for c in listed["InferenceComponents"]] == ["other-ic", "sam-ic"]
    creating = sm.list_inference_components(StatusEquals="Creating")["InferenceComponents"]
    assert [c["InferenceComponentName"] for c in creating] == ["other-ic"]
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert sm.list_inference_components(CreationTimeAfter=later)["InferenceComponents"] == []
    page = sm.list_inference_components(MaxResults=1)
    assert len(page["InferenceComponents"]) == 1 and page["NextToken"]
    code, message = error_of(sm.delete_endpoint, EndpointName="seg")
    assert code == "ValidationException" and "other-ic, sam-ic" in message
    for name in ("sam-ic", "other-ic"):
        sm.delete_inference_component(InferenceComponentName=name)
    assert error_of(sm.describe_inference_component, InferenceComponentName="sam-ic") == (
        "ValidationException",
        'Could not find inference component "arn:aws:sagemaker:us-east-1:123456789012:inference-component/sam-ic".')
    sm.delete_endpoint(EndpointName="seg")


def test_inference_component_errors(moto_aws: Any, sm: Any) -> None:
    model(sm)
    ic_endpoint(sm)
    config(sm, "cfg-model")
    sm.create_endpoint(EndpointName="model-endpoint", EndpointConfigName="cfg-model")

    def create(**changes: Any) -> str:
        request = {"InferenceComponentName": "sam-ic", "EndpointName": "seg", "VariantName": "AllTraffic",
                   "Specification": SPEC, "RuntimeConfig": {"CopyCount": 1}, **changes}
        code, message = error_of(sm.create_inference_component, **request)
        assert code == "ValidationException"
        return message

    assert create(EndpointName="nope").startswith('Could not find endpoint "arn:')
    assert create(VariantName="Other").startswith('Could not find variant "Other"')
    assert "hosts model" in create(EndpointName="model-endpoint")
    assert create(Specification={**SPEC, "ModelName": "missing"}) == (
        "Could not find model 'arn:aws:sagemaker:us-east-1:123456789012:model/missing'.")
    # botocore's client refuses CopyCount < 0 itself; without its check the server must.
    raw = boto3.session.Session().client(
        "sagemaker", endpoint_url=moto_aws.endpoint, region_name="us-east-1", config=Config(parameter_validation=False))
    code, message = error_of(raw.create_inference_component, InferenceComponentName="sam-ic", EndpointName="seg",
                             VariantName="AllTraffic", Specification=SPEC, RuntimeConfig={"CopyCount": -1})
    assert message.endswith("at 'runtimeConfig.copyCount' failed to satisfy constraint: "
                            "Member must have value greater than or equal to 0")
    component(sm, copies=1)
    assert create().startswith('Cannot create already existing inference component "arn:')
    code, message = error_of(sm.update_inference_component_runtime_config, InferenceComponentName="sam-ic",
                             DesiredRuntimeConfig={"CopyCount": 2})
    assert message.startswith("Cannot update in-progress inference component")
    assert error_of(sm.update_inference_component_runtime_config, InferenceComponentName="nope",
                    DesiredRuntimeConfig={"CopyCount": 2})[1].startswith("Could not find inference component")


def test_inference_component_failures(moto_aws: Any, sm: Any) -> None:
    model(sm)
    ic_endpoint(sm)
    moto_aws.fakes.fail_next_component("bad-ic", "Model container failed the ping health check.")
    component(sm, "bad-ic")
    sm.describe_inference_component(InferenceComponentName="bad-ic")
    failed = sm.describe_inference_component(InferenceComponentName="bad-ic")
    assert (failed["InferenceComponentStatus"], failed["FailureReason"]) == (
        "Failed", "Model container failed the ping health check.")
    component(sm, "good-ic", copies=2)
    sm.describe_inference_component(InferenceComponentName="good-ic")
    sm.describe_inference_component(InferenceComponentName="good-ic")
    moto_aws.fakes.fail_next_component("good-ic", "CannotStartContainerError")
    model(sm, "sam-2")
    sm.update_inference_component(InferenceComponentName="good-ic", Specification={**SPEC, "ModelName": "sam-2"},
                                  RuntimeConfig={"CopyCount": 4})
    sm.describe_inference_component(InferenceComponentName="good-ic")
    rolled_back = sm.describe_inference_component(InferenceComponentName="good-ic")
    assert rolled_back["InferenceComponentStatus"] == "InService"
    assert rolled_back["FailureReason"] == "CannotStartContainerError"
    assert rolled_back["Specification"]["ModelName"] == "sam"
    assert rolled_back["RuntimeConfig"] == {"DesiredCopyCount": 2, "CurrentCopyCount": 2}


# --- Application Auto Scaling -----------------------------------------------------------------


def test_inference_component_copy_count_scaling(moto_aws: Any, aas: Any) -> None:
    for name in ("sam-ic", "sam-ic-2"):
        aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=f"inference-component/{name}",
                                     ScalableDimension=IC_DIMENSION, MinCapacity=1, MaxCapacity=4)
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=["inference-component/sam-ic"])
    (target,) = targets["ScalableTargets"]
    assert (target["ScalableDimension"], target["MinCapacity"], target["MaxCapacity"]) == (IC_DIMENSION, 1, 4)
    tracking = aas.put_scaling_policy(
        PolicyName="copies", ServiceNamespace="sagemaker", ResourceId="inference-component/sam-ic",
        ScalableDimension=IC_DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0, "ScaleInCooldown": 300, "ScaleOutCooldown": 60,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"}})
    assert "inference-component/sam-ic:policyName/copies" in tracking["PolicyARN"]
    assert len(tracking["Alarms"]) == 2 and all("AlarmARN" in a for a in tracking["Alarms"])
    alarms = moto_aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert {(a["Namespace"], a["MetricName"], a["Threshold"]) for a in alarms} == {
        ("AWS/SageMaker", "InvocationsPerCopy", 5.0)}
    assert alarms[0]["Dimensions"] == [{"Name": "InferenceComponentName", "Value": "sam-ic"}]
    step = aas.put_scaling_policy(
        PolicyName="from-zero", ServiceNamespace="sagemaker", ResourceId="inference-component/sam-ic",
        ScalableDimension=IC_DIMENSION, PolicyType="StepScaling",
        StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "Cooldown": 60,
                                        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]})
    assert step["PolicyARN"].endswith("policyName/from-zero") and step["Alarms"] == []
    aas.put_scaling_policy(
        PolicyName="copies", ServiceNamespace="sagemaker", ResourceId="inference-component/sam-ic-2",
        ScalableDimension=IC_DIMENSION, PolicyType="StepScaling",
        StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity",
                                        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]})
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId="inference-component/sam-ic")
    by_name = {p["PolicyName"]: p for p in policies["ScalingPolicies"]}
    assert set(by_name) == {"copies", "from-zero"}
    assert by_name["copies"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 5.0
    assert by_name["from-zero"]["StepScalingPolicyConfiguration"]["StepAdjustments"][0]["ScalingAdjustment"] == 1
    aas.delete_scaling_policy(PolicyName="from-zero", ServiceNamespace="sagemaker",
                              ResourceId="inference-component/sam-ic", ScalableDimension=IC_DIMENSION)
    aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId="inference-component/sam-ic",
                                   ScalableDimension=IC_DIMENSION)
    left = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert [(p["ResourceId"], p["PolicyName"]) for p in left] == [("inference-component/sam-ic-2", "copies")]
    assert moto_aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    code, message = error_of(
        aas.put_scaling_policy, PolicyName="p", ServiceNamespace="sagemaker", ResourceId="inference-component/sam-ic",
        ScalableDimension=IC_DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={"TargetValue": 5.0})
    assert code == "ObjectNotFoundException" and "No scalable target registered" in message


def test_variant_scaling_still_works(aas: Any) -> None:
    for dimension in ("sagemaker:variant:DesiredInstanceCount", "sagemaker:variant:DesiredProvisionedConcurrency"):
        aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId="endpoint/seg/variant/AllTraffic",
                                     ScalableDimension=dimension, MinCapacity=1, MaxCapacity=2)
    policy = aas.put_scaling_policy(
        PolicyName="p", ServiceNamespace="sagemaker", ResourceId="endpoint/seg/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 70.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    assert len(policy["Alarms"]) == 2
    assert len(aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]) == 2
    code, _ = error_of(aas.register_scalable_target, ServiceNamespace="sagemaker", ResourceId="inference-component/x",
                       ScalableDimension="sagemaker:inference-component:Bogus", MinCapacity=0, MaxCapacity=1)
    assert code == "ValidationException"


# --- install / reset --------------------------------------------------------------------------


def test_install_is_idempotent_and_reset_empties_the_store(moto_aws: Any, sm: Any) -> None:
    from moto.sagemaker.responses import SageMakerResponse

    patched = SageMakerResponse.create_endpoint
    moto_aws.fakes.install()
    assert SageMakerResponse.create_endpoint is patched
    model(sm)
    ic_endpoint(sm)
    component(sm)
    moto_aws.fakes.settings.update_describes = 5
    moto_aws.fakes.fail_next_update("seg", "x")
    urllib.request.urlopen(urllib.request.Request(f"{moto_aws.endpoint}/moto-api/reset", method="POST"), timeout=10)
    assert sm.list_inference_components()["InferenceComponents"] == []
    assert moto_aws.fakes.settings.update_describes == 1
    ic_endpoint(sm)  # same names again: nothing was left behind, and no fault is pending
    config(sm, "cfg-2", model_name=None)
    sm.update_endpoint(EndpointName="seg", EndpointConfigName="cfg-2")
    assert "FailureReason" not in wait(sm, "seg")
    component(sm)
    moto_aws.fakes.reset()
    assert sm.list_inference_components()["InferenceComponents"] == []
