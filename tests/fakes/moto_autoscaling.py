"""Application Auto Scaling for SageMaker inference components in moto (installed by ``moto_sagemaker``).

moto 5.2 knows only ``sagemaker:variant:DesiredInstanceCount`` in the sagemaker namespace. From the
Application Auto Scaling API reference
(https://docs.aws.amazon.com/autoscaling/application/APIReference/):

* API_RegisterScalableTarget ScalableDimension also takes ``sagemaker:inference-component:DesiredCopyCount``
  (ResourceId "inference-component/NAME") and ``sagemaker:variant:DesiredProvisionedConcurrency``;
* API_PutScalingPolicy answers ``Alarms`` for target tracking (AWS creates a high and a low
  CloudWatch alarm; moto does so only for DynamoDB and ECS) and, for a target that was never
  registered, ObjectNotFoundException;
* API_DeregisterScalableTarget: "Deregistering a scalable target deletes the scaling policies ...
  that are associated with it." (moto leaves them);
* API_DescribeScalingPolicies ResourceId filters by the exact ID (moto matches substrings, so
  "inference-component/ic" also listed the policies of "inference-component/ic-2").
"""

from __future__ import annotations

from enum import Enum
from typing import Any

NEW_DIMENSIONS = {
    "SAGEMAKER_INFERENCE_COMPONENT_DESIRED_COPY_COUNT": "sagemaker:inference-component:DesiredCopyCount",
    "SAGEMAKER_VARIANT_DESIRED_PROVISIONED_CONCURRENCY": "sagemaker:variant:DesiredProvisionedConcurrency",
}

# PredefinedMetricType (API_PredefinedMetricSpecification) -> the AWS/SageMaker metric it tracks.
SAGEMAKER_METRICS = {
    "SageMakerVariantInvocationsPerInstance": "InvocationsPerInstance",
    "SageMakerVariantProvisionedConcurrencyUtilization": "ServerlessProvisionedConcurrencyUtilization",
    "SageMakerVariantConcurrentRequestsPerModelHighResolution": "ConcurrentRequestsPerModel",
    "SageMakerInferenceComponentInvocationsPerCopy": "InvocationsPerCopy",
    "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution": "ConcurrentRequestsPerCopy",
}


def _dimensions(resource_id: str) -> list[dict[str, str]]:
    parts = resource_id.split("/")
    if parts[0] == "inference-component":
        return [{"Name": "InferenceComponentName", "Value": parts[1]}]
    return [{"Name": "EndpointName", "Value": parts[1]}, {"Name": "VariantName", "Value": parts[3]}]


def _sagemaker_alarms(policy: Any) -> list[Any]:
    """The AlarmHigh / AlarmLow pair that target tracking creates (metric names assumed)."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.moto_api._internal import mock_random

    config = policy.target_tracking_scaling_policy_configuration or {}
    custom = config.get("CustomizedMetricSpecification") or {}
    predefined = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType", "")
    metric = custom.get("MetricName") or SAGEMAKER_METRICS.get(predefined, predefined)
    namespace = custom.get("Namespace") or "AWS/SageMaker"
    dimensions = custom.get("Dimensions") or _dimensions(policy.resource_id)
    cloudwatch = cloudwatch_backends[policy.account_id][policy.region_name]
    action = f"{policy.policy_arn}:createdBy/{mock_random.uuid4()}"
    alarms = []
    for side, operator, periods in (("AlarmHigh", "GreaterThanThreshold", 3), ("AlarmLow", "LessThanThreshold", 15)):
        alarms.append(cloudwatch.put_metric_alarm(
            name=f"TargetTracking-{policy.resource_id}-{side}-{mock_random.uuid4()}", namespace=namespace,
            metric_name=metric, comparison_operator=operator, evaluation_periods=periods, period=60,
            threshold=float(config.get("TargetValue", 0.0)), statistic=custom.get("Statistic", "Average"),
            description=f"DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {action}.",
            dimensions=dimensions, alarm_actions=[action]))
    return alarms


def install() -> None:
    from moto.applicationautoscaling import models, responses
    from moto.core.exceptions import JsonRESTError

    values = {member.name: member.value for member in models.ScalableDimensionValueSet}
    if not set(NEW_DIMENSIONS.values()) <= set(values.values()):
        values.update(NEW_DIMENSIONS)
        # moto validates against this enum in both modules (models._target_params_are_valid and
        # responses._validate_params); both read the module global at call time.
        models.ScalableDimensionValueSet = responses.ScalableDimensionValueSet = Enum(
            "ScalableDimensionValueSet", values)

    policy_class, backend_class = models.FakeApplicationAutoscalingPolicy, models.ApplicationAutoscalingBackend
    create_alarms = policy_class.create_alarms

    def create_alarms_with_sagemaker(self: Any) -> None:
        create_alarms(self)
        if self.policy_type == "TargetTrackingScaling" and self.service_namespace == "sagemaker":
            self.alarms.extend(_sagemaker_alarms(self))

    policy_class.create_alarms = create_alarms_with_sagemaker
    put_scaling_policy = backend_class.put_scaling_policy

    def put_scaling_policy_checked(self: Any, policy_name: str, service_namespace: str, resource_id: str,
                                   scalable_dimension: str, policy_body: Any, policy_type: Any) -> Any:
        if service_namespace == "sagemaker" and not self._scalable_target_exists(resource_id, scalable_dimension):
            raise JsonRESTError("ObjectNotFoundException", (
                f"No scalable target registered for service namespace: {service_namespace}, "
                f"resource ID: {resource_id}, scalable dimension: {scalable_dimension}"))
        return put_scaling_policy(self, policy_name, service_namespace, resource_id, scalable_dimension,
                                  policy_body, policy_type)

    backend_class.put_scaling_policy = put_scaling_policy_checked
    deregister = backend_class.deregister_scalable_target

    def deregister_with_policies(self: Any, namespace: str, r_id: str, dimension: str) -> None:
        deregister(self, namespace, r_id, dimension)
        for key, policy in list(self.policies.items()):
            key_of_policy = (policy.service_namespace, policy.resource_id, policy.scalable_dimension)
            if key_of_policy == (namespace, r_id, dimension):
                policy.delete_alarms(self.account_id, self.region_name)
                del self.policies[key]

    backend_class.deregister_scalable_target = deregister_with_policies

    def describe_exact(self: Any, service_namespace: str, resource_id: str, scalable_dimension: str,
                       max_results: Any, next_token: Any) -> tuple[str | None, list]:
        policies = [p for p in self.policies.values() if p.service_namespace == service_namespace
                    and (not resource_id or p.resource_id == resource_id)
                    and (not scalable_dimension or p.scalable_dimension == scalable_dimension)]
        start = int(next_token) if next_token else 0
        end = start + (max_results or 100)
        return (str(end) if end < len(policies) else None), policies[start:end]

    backend_class.describe_scaling_policies = describe_exact
