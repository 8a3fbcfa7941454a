"""``segany status aws`` and ``segany destroy aws``: read, or remove, what a deployment made,
found by its tags. Destroy removes only resources tagged for this deployment (scaling, alarms,
inference component, endpoint, configs, models; S3 outputs only with ``--delete-outputs``) and
reports anything of the same name it left alone.
"""

from __future__ import annotations

from typing import Any

from deploy.aws.autoscaling import teardown_calls
from deploy.aws.deploy import read_or_assume
from deploy.aws.state import AwsState
from deploy.plan import Call, Plan, Wait, render


def destroy_plan(endpoint: str, state: AwsState, *, delete_outputs: bool = False) -> Plan:
    calls: list[Call] = []
    notes: list[str] = []
    for resource_id in state.targets:
        calls += teardown_calls(state, resource_id)
    if state.alarms:
        calls.append(Call("cloudwatch", "delete_alarms", {"AlarmNames": sorted(state.alarms)},
                          f"delete alarms {', '.join(sorted(state.alarms))}"))
    if state.component is not None:
        calls.append(Call("sagemaker", "delete_inference_component", {"InferenceComponentName": endpoint},
                          f"delete inference component {endpoint}",
                          wait=Wait("sagemaker", "inference_component_deleted", {"InferenceComponentName": endpoint})))
    if state.endpoint is not None:
        if state.endpoint_tags.get("segany:app"):
            calls.append(Call("sagemaker", "delete_endpoint", {"EndpointName": endpoint}, f"delete endpoint {endpoint}",
                              wait=Wait("sagemaker", "endpoint_deleted", {"EndpointName": endpoint})))
        else:
            notes.append(f"endpoint {endpoint} has no segany tags: left alone")
    calls += [Call("sagemaker", "delete_endpoint_config", {"EndpointConfigName": c.name}, f"delete endpoint config {c.name}")
              for c in state.configs]
    calls += [Call("sagemaker", "delete_model", {"ModelName": m.name}, f"delete model {m.name}") for m in state.models]
    outputs = sorted({(d.get("AsyncInferenceConfig") or {}).get("OutputConfig", {}).get("S3OutputPath", "").rsplit("/results", 1)[0]
                      for d in state.config_details.values()} - {""})
    if outputs:
        if delete_outputs:
            calls += [Call("s3-prefix", "delete_prefix", {"uri": uri}, f"delete {uri}/ (async results)") for uri in outputs]
        else:
            notes.append(f"async results kept in {', '.join(outputs)} (add --delete-outputs to remove them)")
    if state.jobs:
        notes.append(f"{len(state.jobs)} transform job record(s) stay (SageMaker keeps jobs; their outputs stay in S3)")
    return Plan(tuple(calls), tuple(notes))


class PrefixDeleter:
    """The plan's ``s3-prefix`` pseudo-client: every object under a prefix."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def delete_prefix(self, uri: str) -> dict[str, int]:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        deleted = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                deleted += len(keys)
        return {"deleted": deleted}


def destroy(endpoint: str, clients: Any, *, dry_run: bool, delete_outputs: bool, poll_s: float = 15, progress: Any = None) -> str:
    from deploy.aws.deploy import POLLS
    from deploy.plan import PlanClients, apply

    state = read_or_assume(clients, endpoint, dry_run)
    plan = destroy_plan(endpoint, state, delete_outputs=delete_outputs)
    title = f"segany destroy aws: {endpoint}"
    if dry_run:
        return render(plan, title + " (dry run: nothing is changed)")
    apply(plan, PlanClients(clients, {"s3-prefix": PrefixDeleter(clients("s3"))}), poll_s=poll_s, polls=POLLS, progress=progress)
    left = "; ".join(plan.notes)
    return f"{title}: removed {len(plan.calls)} resource(s)" + (f"; {left}" if left else "")


def status(endpoint: str, clients: Any) -> str:
    state = read_or_assume(clients, endpoint, dry_run=False)
    state_batch = read_or_assume(clients, endpoint, dry_run=False, batch=True)
    lines = [f"deployment {endpoint}"]
    if state.endpoint is None:
        lines.append("  endpoint: none")
    else:
        e = state.endpoint
        serving = state.serving_config
        mode = state.endpoint_tags.get("segany:mode", "?")
        lines.append(f"  endpoint: {e['EndpointStatus']} ({mode}), config {serving}"
                     + (f", failure: {e['FailureReason']}" if e.get("FailureReason") else ""))
        for variant in e.get("ProductionVariants", []):
            count = variant.get("CurrentInstanceCount", variant.get("CurrentServerlessConfig", ""))
            lines.append(f"  variant {variant['VariantName']}: instances {count}")
    serving_release = (state.release_of_config(state.serving_config) if state.component is None
                       else next((m.release for m in state.models if m.name == state.component["Specification"]["ModelName"]), None))
    lines.append("  releases (oldest first):")
    for item in (state.models if state.component or not state.configs else state.configs):
        mark = "  <- serving" if item.release == serving_release else ""
        lines.append(f"    {item.release}  {item.name}  created {item.created:%Y-%m-%d %H:%M:%S}{mark}")
    if state.component:
        c = state.component
        runtime = c.get("RuntimeConfig", {})
        lines.append(f"  inference component {c['InferenceComponentName']}: {c['InferenceComponentStatus']}, copies "
                     f"{runtime.get('CurrentCopyCount', '?')} (desired {runtime.get('DesiredCopyCount', '?')})")
    for resource_id, target in state.targets.items():
        lines.append(f"  scaling {resource_id}: {target['MinCapacity']}-{target['MaxCapacity']}")
    for name, policy in sorted(state.policies.items()):
        lines.append(f"    policy {name} ({policy['PolicyType']})")
    for name, alarm in sorted(state.alarms.items()):
        lines.append(f"  alarm {name}: {alarm.get('StateValue', '?')} ({alarm['MetricName']})")
    for job in state_batch.jobs:
        lines.append(f"  transform job {job.name} (release {job.release})")
    return "\n".join(lines)
