"""Scaling and alarms of a deployment: Application Auto Scaling targets and policies, and the
CloudWatch alarms that wake a scaled-to-zero endpoint or roll a bad release back.

- real-time: target tracking on ``SageMakerVariantInvocationsPerInstance`` between
  ``--min-instances`` and ``--max-instances`` (endpoint-auto-scaling-add-policy.html);
- real-time from zero: the inference component's copy count (min 0) with target tracking on
  ``SageMakerInferenceComponentInvocationsPerCopy``, and a step policy on the
  ``NoCapacityInvocationFailures`` alarm that adds a copy when a request finds none
  (endpoint-auto-scaling-zero-instances.html);
- async: min 0 by default, target tracking on ``ApproximateBacklogSizePerInstance``, and a step
  policy on ``HasBacklogWithoutCapacity`` so the first request after idle wakes it; without it
  the endpoint scales out only once the backlog passes the target (async-inference-autoscale.html);
- serverless, real-time, async: ``Invocation5XXErrors`` and ``ModelLatency`` alarms that an
  update's DeploymentConfig rolls back on (deployment-guardrails-auto-rollbacks.html).
"""

from __future__ import annotations

from typing import Any

from deploy.aws.settings import AwsSettings
from deploy.aws.state import VARIANT, AwsState
from deploy.plan import Call, Plan, Ref
from deploy.release import APP, APP_TAG, DEPLOYMENT_TAG

LATENCY_ALARM_US = 55_000_000  # ModelLatency (microseconds): near the 60 s invocation limit


def rollback_alarm_names(s: AwsSettings) -> list[str]:
    return [f"{s.endpoint}-5xx", f"{s.endpoint}-latency"]


def _target(s: AwsSettings) -> tuple[str, str, int, int] | None:
    """(ResourceId, ScalableDimension, min, max) of what scales, or None."""
    if s.mode not in ("realtime", "async"):
        return None
    low, high = s.scaling_bounds
    if s.scale_to_zero_realtime:
        return f"inference-component/{s.endpoint}", "sagemaker:inference-component:DesiredCopyCount", 0, high
    return f"endpoint/{s.endpoint}/variant/{VARIANT}", "sagemaker:variant:DesiredInstanceCount", low, high


def _tracking(s: AwsSettings) -> tuple[str, dict[str, Any]]:
    if s.mode == "async":
        return f"{s.endpoint}-backlog", {
            "TargetValue": s.backlog_per_instance, "ScaleInCooldown": 600, "ScaleOutCooldown": 300,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": s.endpoint}], "Statistic": "Average"}}
    metric = ("SageMakerInferenceComponentInvocationsPerCopy" if s.scale_to_zero_realtime
              else "SageMakerVariantInvocationsPerInstance")
    return f"{s.endpoint}-invocations", {
        "TargetValue": s.invocations_per_instance, "ScaleInCooldown": 600, "ScaleOutCooldown": 120,
        "PredefinedMetricSpecification": {"PredefinedMetricType": metric}}


def _wake(s: AwsSettings) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The step policy and the alarm that scale out from zero, or None when the minimum is not 0."""
    if s.scale_to_zero_realtime:
        metric, dimension, statistic, periods, aggregation = (
            "NoCapacityInvocationFailures", {"Name": "InferenceComponentName", "Value": s.endpoint}, "Sum", 1, "Maximum")
    elif s.mode == "async" and s.scaling_bounds[0] == 0:
        metric, dimension, statistic, periods, aggregation = (
            "HasBacklogWithoutCapacity", {"Name": "EndpointName", "Value": s.endpoint}, "Average", 2, "Average")
    else:
        return None
    step = {"AdjustmentType": "ChangeInCapacity", "MetricAggregationType": aggregation, "Cooldown": 60,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]}
    alarm = {"AlarmName": f"{s.endpoint}-wake", "MetricName": metric, "Namespace": "AWS/SageMaker",
             "Statistic": statistic, "Period": 60, "EvaluationPeriods": periods, "DatapointsToAlarm": periods,
             "Threshold": 1.0, "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "missing",
             "Dimensions": [dimension]}
    return step, alarm


def _rollback_alarms(s: AwsSettings) -> list[dict[str, Any]]:
    if s.mode == "batch" or s.scale_to_zero_realtime:
        return []
    dimensions = [{"Name": "EndpointName", "Value": s.endpoint}, {"Name": "VariantName", "Value": VARIANT}]
    five, latency = rollback_alarm_names(s)
    common = {"Namespace": "AWS/SageMaker", "Period": 60, "EvaluationPeriods": 2, "DatapointsToAlarm": 2,
              "TreatMissingData": "notBreaching", "Dimensions": dimensions}
    return [
        {"AlarmName": five, "MetricName": "Invocation5XXErrors", "Statistic": "Sum", "Threshold": 1.0,
         "ComparisonOperator": "GreaterThanOrEqualToThreshold", **common},
        {"AlarmName": latency, "MetricName": "ModelLatency", "Statistic": "Average", "Threshold": float(LATENCY_ALARM_US),
         "ComparisonOperator": "GreaterThanThreshold", **common},
    ]


def _same(sent: Any, found: Any) -> bool:
    """Every field we would send is already there (describe answers add defaults of their own)."""
    if isinstance(sent, dict):
        return isinstance(found, dict) and all(_same(v, found.get(k)) for k, v in sent.items())
    if isinstance(sent, list):
        return isinstance(found, list) and len(sent) == len(found) and all(_same(a, b) for a, b in zip(sent, found))
    if isinstance(sent, float) or isinstance(found, float):
        return found is not None and float(sent) == float(found)
    return sent == found


def _alarm_call(alarm: dict[str, Any], actions: list[Any], state: AwsState, s: AwsSettings) -> Call | None:
    params = {**alarm, "AlarmActions": actions, "ActionsEnabled": True,
              "Tags": [{"Key": APP_TAG, "Value": APP}, {"Key": DEPLOYMENT_TAG, "Value": s.endpoint}]}
    found = state.alarms.get(alarm["AlarmName"])
    if found is not None and _same({k: v for k, v in params.items() if k != "Tags"}, found):
        return None
    return Call("cloudwatch", "put_metric_alarm", params, f"alarm {alarm['AlarmName']} ({alarm['MetricName']})")


def scaling_plan(s: AwsSettings, state: AwsState, *, before_update: bool = False) -> Plan:
    """``before_update``: what must go before UpdateEndpoint (a scaled variant whose instance type
    changes must be deregistered first: endpoint-scaling-update.html). Else: targets, policies and
    alarms after the endpoint, only what differs from the account (a re-run changes nothing)."""
    if before_update:
        return _deregister_for_instance_change(s, state)
    target = _target(s)
    calls: list[Call] = []
    for alarm in _rollback_alarms(s):
        call = _alarm_call(alarm, [], state, s)
        calls += [call] if call else []
    if target is None:
        return Plan(tuple(calls))
    resource_id, dimension, low, high = target
    found = state.targets.get(resource_id)
    deregistered = bool(_deregister_for_instance_change(s, state))
    if deregistered or not found or (found["MinCapacity"], found["MaxCapacity"]) != (low, high):
        calls.append(Call("application-autoscaling", "register_scalable_target", {
            "ServiceNamespace": "sagemaker", "ResourceId": resource_id, "ScalableDimension": dimension,
            "MinCapacity": low, "MaxCapacity": high}, f"scale {resource_id} between {low} and {high}"))
    name, tracking = _tracking(s)
    policy = state.policies.get(name)
    if deregistered or not policy or not _same(tracking, policy.get("TargetTrackingScalingPolicyConfiguration")):
        calls.append(Call("application-autoscaling", "put_scaling_policy", {
            "PolicyName": name, "ServiceNamespace": "sagemaker", "ResourceId": resource_id, "ScalableDimension": dimension,
            "PolicyType": "TargetTrackingScaling", "TargetTrackingScalingPolicyConfiguration": tracking},
            f"target tracking {name}"))
    wake = _wake(s)
    if wake:
        step, alarm = wake
        policy_name = f"{s.endpoint}-wake"
        policy = state.policies.get(policy_name)
        if deregistered or not policy or not _same(step, policy.get("StepScalingPolicyConfiguration")):
            calls.append(Call("application-autoscaling", "put_scaling_policy", {
                "PolicyName": policy_name, "ServiceNamespace": "sagemaker", "ResourceId": resource_id,
                "ScalableDimension": dimension, "PolicyType": "StepScaling", "StepScalingPolicyConfiguration": step},
                f"step policy {policy_name}: add capacity when {alarm['MetricName']}", key="wake-policy"))
            action: Any = Ref("wake-policy", "PolicyARN")
        else:
            action = policy["PolicyARN"]
        call = _alarm_call(alarm, [action], state, s)  # never None with a Ref: a new policy, a new action
        calls += [call] if call else []
    return Plan(tuple(calls))


def _deregister_for_instance_change(s: AwsSettings, state: AwsState) -> Plan:
    resource_id = f"endpoint/{s.endpoint}/variant/{VARIANT}"
    serving = state.config_details.get(state.serving_config or "", {}).get("ProductionVariants", [{}])[0]
    if resource_id not in state.targets or not serving.get("InstanceType") or serving.get("InstanceType") == s.instance_type:
        return Plan()
    return Plan(tuple(teardown_calls(state, resource_id)))


def teardown_calls(state: AwsState, resource_id: str) -> list[Call]:
    """Delete a target's policies, then deregister it."""
    target = state.targets[resource_id]
    calls = [Call("application-autoscaling", "delete_scaling_policy", {
        "PolicyName": name, "ServiceNamespace": "sagemaker", "ResourceId": resource_id,
        "ScalableDimension": target["ScalableDimension"]}, f"delete policy {name}")
        for name, policy in state.policies.items() if policy["ResourceId"] == resource_id]
    calls.append(Call("application-autoscaling", "deregister_scalable_target", {
        "ServiceNamespace": "sagemaker", "ResourceId": resource_id, "ScalableDimension": target["ScalableDimension"]},
        f"stop scaling {resource_id}"))
    return calls
