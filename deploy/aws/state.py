"""What exists in the account for one deployment, read from SageMaker, Application Auto Scaling
and CloudWatch by its tags and names: the only state a deploy has (no local state file).

Only resources tagged ``segany:app`` + ``segany:deployment`` for this name count as ours; an
endpoint of that name without our tags is reported, never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from deploy.release import RELEASE_TAG, is_ours
from deploy.aws.s3 import error_of

VARIANT = "AllTraffic"


@dataclass(frozen=True)
class Tagged:
    name: str
    arn: str
    tags: dict[str, str]
    created: datetime

    @property
    def release(self) -> str | None:
        return self.tags.get(RELEASE_TAG)


@dataclass(frozen=True)
class AwsState:
    endpoint: dict[str, Any] | None = None  # DescribeEndpoint
    endpoint_tags: dict[str, str] = field(default_factory=dict)
    models: tuple[Tagged, ...] = ()  # ours, oldest first
    configs: tuple[Tagged, ...] = ()
    config_details: dict[str, dict[str, Any]] = field(default_factory=dict)  # DescribeEndpointConfig of ours
    component: dict[str, Any] | None = None  # DescribeInferenceComponent of the deployment's component
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # ResourceId -> scalable target
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # PolicyName -> policy
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)  # AlarmName -> alarm
    jobs: tuple[Tagged, ...] = ()  # transform jobs (batch)
    offline: bool = False  # no credentials: planned as if nothing existed

    @property
    def serving_config(self) -> str | None:
        return self.endpoint.get("EndpointConfigName") if self.endpoint else None

    def release_of_config(self, name: str | None) -> str | None:
        return next((c.release for c in self.configs if c.name == name), None)

    def model_names(self) -> set[str]:
        return {m.name for m in self.models}

    def config_names(self) -> set[str]:
        return {c.name for c in self.configs}


def _missing(exc: Exception) -> bool:
    error = error_of(exc)
    return error.get("Code") in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException") and (
        "not find" in error.get("Message", "") or "not found" in error.get("Message", "").lower()
        or "does not exist" in error.get("Message", ""))


def _tags(sm: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for page in sm.get_paginator("list_tags").paginate(ResourceArn=arn):
        tags.update({tag["Key"]: tag["Value"] for tag in page["Tags"]})
    return tags


def _ours(sm: Any, deployment: str, paginator: str, key: str, name_key: str, arn_key: str) -> tuple[Tagged, ...]:
    found = []
    for page in sm.get_paginator(paginator).paginate(NameContains=deployment):
        for item in page[key]:
            tags = _tags(sm, item[arn_key])
            if is_ours(tags, deployment):
                found.append(Tagged(item[name_key], item[arn_key], tags, item["CreationTime"]))
    return tuple(sorted(found, key=lambda t: t.created))


def read_state(client: Callable[[str], Any], deployment: str, *, batch: bool = False) -> AwsState:
    """The deployment's resources as the account has them now."""
    sm = client("sagemaker")
    try:
        endpoint = sm.describe_endpoint(EndpointName=deployment)
    except Exception as exc:
        if not _missing(exc):
            raise
        endpoint = None
    endpoint_tags = _tags(sm, endpoint["EndpointArn"]) if endpoint else {}
    models = _ours(sm, deployment, "list_models", "Models", "ModelName", "ModelArn")
    if batch:
        jobs = _ours(sm, deployment, "list_transform_jobs", "TransformJobSummaries", "TransformJobName", "TransformJobArn")
        return AwsState(endpoint, endpoint_tags, models, jobs=jobs)
    configs = _ours(sm, deployment, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "EndpointConfigArn")
    details = {c.name: sm.describe_endpoint_config(EndpointConfigName=c.name) for c in configs}
    component = None
    if endpoint is not None and is_ours(endpoint_tags, deployment):
        try:
            component = sm.describe_inference_component(InferenceComponentName=deployment)
        except Exception as exc:
            if not _missing(exc):
                raise
    scaling = client("application-autoscaling")
    resource_ids = [f"endpoint/{deployment}/variant/{VARIANT}", f"inference-component/{deployment}"]
    targets = {t["ResourceId"]: t for t in scaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=resource_ids)["ScalableTargets"]}
    policies: dict[str, dict[str, Any]] = {}
    for resource_id in targets:
        for policy in scaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource_id)["ScalingPolicies"]:
            policies[policy["PolicyName"]] = policy
    cloudwatch = client("cloudwatch")
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms(AlarmNamePrefix=f"{deployment}-")["MetricAlarms"]
              if is_ours({t["Key"]: t["Value"] for t in cloudwatch.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"]},
                         deployment)}
    return AwsState(endpoint, endpoint_tags, models, configs, details, component, targets, policies, alarms)
