"""The SageMaker resources of a release, as a plan (deploy/plan.py) computed from the settings,
what the deploy resolved (image, weights, role) and the state read from the account.

Per release: a Model and an EndpointConfig named ``ENDPOINT-RELEASE``; the Endpoint keeps the
deployment's name and is created, or updated to the release's config (blue/green, with the
deployment's rollback alarms); real-time with ``--min-instances 0`` hosts the model as an
inference component of the endpoint's name, so it can scale to zero; batch runs a transform
job per release. Scaling and alarms: deploy/aws/autoscaling.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deploy.aws.autoscaling import rollback_alarm_names, scaling_plan
from deploy.aws.settings import AwsSettings
from deploy.aws.state import VARIANT, AwsState
from deploy.plan import Call, Plan, Wait
from deploy.release import release_id, tags, versioned
from deploy.limits import MODEL_PEAK_MB, MEMORY_HEADROOM

COMPONENT_WAIT = "inference_component_in_service"  # a poll of ours: boto3 has no waiter for it


@dataclass(frozen=True)
class Resolved:
    """What a deploy decided before planning: where the image and weights are, and who runs them."""

    settings: AwsSettings
    image_uri: str
    model_type: str
    release: str
    role_arn: str
    model_data_url: str | None = None  # model.tar.gz on S3 (SageMaker extracts it into /opt/ml/model)
    checkpoint_env: str | None = None  # a checkpoint URI the container fetches itself (SEGANY_CHECKPOINT)
    startup_s: int = 600  # ContainerStartupHealthCheckTimeoutInSeconds
    download_s: int = 600  # ModelDataDownloadTimeoutInSeconds

    @property
    def name(self) -> str:
        return versioned(self.settings.endpoint, self.release)

    @property
    def config_name(self) -> str:
        """The release's EndpointConfig. With an inference component the config holds no model,
        only the instances: it is named after its own content, so a release that changes only
        the model updates the component and leaves the endpoint as it is."""
        if not self.settings.scale_to_zero_realtime:
            return self.name
        return versioned(self.settings.endpoint, release_id({"variant": production_variant(self), "role": self.role_arn}))

    def tag_list(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in tags(self.settings.endpoint, self.release, self.settings.mode).items()]

    def environment(self) -> dict[str, str]:
        s = self.settings
        env = {"SEGANY_SAGEMAKER_MODE": s.mode, "SEGANY_MODEL": self.model_type, **s.env}
        if s.mode in ("batch", "async"):
            env["SEGANY_CUSTOM_ATTRIBUTES"] = s.custom_attributes
        if self.checkpoint_env:
            env["SEGANY_CHECKPOINT"] = self.checkpoint_env
        return env


def create_model(r: Resolved) -> Call:
    container: dict[str, Any] = {"Image": r.image_uri, "Environment": r.environment()}
    if r.model_data_url:
        container["ModelDataUrl"] = r.model_data_url
    return Call("sagemaker", "create_model", {
        "ModelName": r.name, "ExecutionRoleArn": r.role_arn, "PrimaryContainer": container, "Tags": r.tag_list(),
    }, f"model {r.name}")


def production_variant(r: Resolved) -> dict[str, Any]:
    s = r.settings
    if s.mode == "serverless":
        serverless: dict[str, Any] = {"MemorySizeInMB": s.memory_mb, "MaxConcurrency": s.max_concurrency}
        if s.provisioned_concurrency:
            serverless["ProvisionedConcurrency"] = s.provisioned_concurrency
        return {"VariantName": VARIANT, "ModelName": r.name, "ServerlessConfig": serverless}
    low, high = s.scaling_bounds
    if s.scale_to_zero_realtime:  # the model comes as an inference component; the variant names none
        return {"VariantName": VARIANT, "InstanceType": s.instance_type, "InitialInstanceCount": max(1, s.instance_count),
                "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": high},
                "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}}
    return {"VariantName": VARIANT, "ModelName": r.name, "InstanceType": s.instance_type,
            "InitialInstanceCount": max(1, s.instance_count),  # async scales to its minimum once in service
            "ContainerStartupHealthCheckTimeoutInSeconds": r.startup_s, "ModelDataDownloadTimeoutInSeconds": r.download_s}


def create_endpoint_config(r: Resolved) -> Call:
    s = r.settings
    params: dict[str, Any] = {"EndpointConfigName": r.config_name, "ProductionVariants": [production_variant(r)], "Tags": r.tag_list()}
    if s.scale_to_zero_realtime:
        params["ExecutionRoleArn"] = r.role_arn  # required with inference components (API_CreateEndpointConfig)
    if s.mode == "async":
        output: dict[str, Any] = {"S3OutputPath": f"{s.output}/results", "S3FailurePath": f"{s.output}/failures"}
        topics = {k: v for k, v in (("SuccessTopic", s.sns_success_topic), ("ErrorTopic", s.sns_error_topic)) if v}
        if topics:
            output["NotificationConfig"] = topics
        params["AsyncInferenceConfig"] = {
            "OutputConfig": output, "ClientConfig": {"MaxConcurrentInvocationsPerInstance": s.max_concurrent_invocations}}
    return Call("sagemaker", "create_endpoint_config", params, f"endpoint config {r.name}")


def deployment_config(s: AwsSettings) -> dict[str, Any]:
    """Blue/green (API_DeploymentConfig): all at once, canary or linear, rolled back by the
    deployment's alarms (deploy/aws/autoscaling.py creates them)."""
    routing: dict[str, Any] = {"Type": s.deployment.replace("-", "_").upper(), "WaitIntervalInSeconds": s.wait_s}
    if s.deployment == "canary":
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": s.traffic_percent}
    elif s.deployment == "linear":
        routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": s.traffic_percent}
    else:
        routing["WaitIntervalInSeconds"] = 0  # required; all at once has no step to wait between
    return {
        "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, "TerminationWaitInSeconds": 0,
                                  "MaximumExecutionTimeoutInSeconds": 3600},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in rollback_alarm_names(s)]},
    }


def component_spec(r: Resolved) -> dict[str, Any]:
    """The inference component's model and what one copy needs of an instance."""
    memory = int(MODEL_PEAK_MB[r.model_type] * MEMORY_HEADROOM)
    return {"ModelName": r.name,
            "StartupParameters": {"ModelDataDownloadTimeoutInSeconds": r.download_s,
                                  "ContainerStartupHealthCheckTimeoutInSeconds": r.startup_s},
            "ComputeResourceRequirements": {"NumberOfCpuCoresRequired": 1, "MinMemoryRequiredInMb": memory}}


def endpoint_plan(r: Resolved, state: AwsState) -> Plan:
    """Model, config, endpoint (created or updated) and, for scale to zero, the component."""
    s = r.settings
    calls: list[Call] = []
    if r.name not in state.model_names():
        calls.append(create_model(r))
    if r.config_name not in state.config_names():
        calls.append(create_endpoint_config(r))
    in_service = Wait("sagemaker", "endpoint_in_service", {"EndpointName": s.endpoint})
    if state.endpoint is None:
        calls.append(Call("sagemaker", "create_endpoint", {
            "EndpointName": s.endpoint, "EndpointConfigName": r.config_name, "Tags": r.tag_list(),
        }, f"endpoint {s.endpoint}", wait=in_service))
    elif state.serving_config != r.config_name:
        params: dict[str, Any] = {"EndpointName": s.endpoint, "EndpointConfigName": r.config_name}
        if not s.scale_to_zero_realtime:
            params["DeploymentConfig"] = deployment_config(s)
        previous = state.config_details.get(state.serving_config or "", {}).get("ProductionVariants", [{}])[0]
        if s.mode != "serverless" and previous.get("InstanceType") == s.instance_type:
            # keep the instance count autoscaling chose (endpoint-scaling-update.html)
            params["RetainAllVariantProperties"] = True
        calls.append(Call("sagemaker", "update_endpoint", params,
                          f"endpoint {s.endpoint} -> release {r.release}", key="update", wait=in_service))
    if s.scale_to_zero_realtime:
        component = state.component
        component_wait = Wait("sagemaker", COMPONENT_WAIT, {"InferenceComponentName": s.endpoint})
        if component is None:
            calls.append(Call("sagemaker", "create_inference_component", {
                "InferenceComponentName": s.endpoint, "EndpointName": s.endpoint, "VariantName": VARIANT,
                "Specification": component_spec(r), "RuntimeConfig": {"CopyCount": 1}, "Tags": r.tag_list(),
            }, f"inference component {s.endpoint}", wait=component_wait))
        elif component.get("Specification", {}).get("ModelName") != r.name:
            calls.append(Call("sagemaker", "update_inference_component", {
                "InferenceComponentName": s.endpoint, "Specification": component_spec(r),
            }, f"inference component {s.endpoint} -> release {r.release}", wait=component_wait))
    return Plan(tuple(calls))


def deploy_plan(r: Resolved, state: AwsState) -> Plan:
    """Everything a deploy of this release does, in order (batch: see transform_plan)."""
    plan = Plan(notes=("no AWS credentials were found: planned as if nothing existed yet",) if state.offline else ())
    return plan + scaling_plan(r.settings, state, before_update=True) + endpoint_plan(r, state) + scaling_plan(r.settings, state)


def transform_plan(r: Resolved, state: AwsState, job_name: str) -> Plan:
    """Batch: the model, then one transform job over the input prefix, its output under its own prefix."""
    s = r.settings
    calls = [] if r.name in state.model_names() else [create_model(r)]
    calls.append(Call("sagemaker", "create_transform_job", {
        "TransformJobName": job_name, "ModelName": r.name, "MaxConcurrentTransforms": 1,
        "MaxPayloadInMB": s.max_payload_mb, "BatchStrategy": "SingleRecord",
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": s.invocations_timeout_s, "InvocationsMaxRetries": 1},
        "Environment": {"SEGANY_CUSTOM_ATTRIBUTES": s.custom_attributes},
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{s.input}/"}},
                           "ContentType": "application/x-image", "SplitType": "None"},
        "TransformOutput": {"S3OutputPath": f"{s.output}/{job_name}/", "Accept": "application/json", "AssembleWith": "None"},
        "TransformResources": {"InstanceType": s.instance_type, "InstanceCount": s.instance_count},
        "Tags": r.tag_list(),
    }, f"transform job {job_name}", wait=Wait("sagemaker", "transform_job_completed_or_stopped",
                                              {"TransformJobName": job_name}, timeout_s=2 * 86400)))
    return Plan(tuple(calls))
