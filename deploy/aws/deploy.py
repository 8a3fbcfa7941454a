"""``segany deploy aws``: plan, then apply, for every SageMaker mode; and ``--rollback``.

1. the settings are checked (deploy/aws/settings.py, checks.py): a bad value stops here;
2. the image (pushed to ECR where it is local: deploy/aws/image.py) and the weights
   (deploy/aws/weights.py) are resolved, and the release named after all of it;
3. the account's state is read (deploy/aws/state.py) and the plan computed
   (deploy/aws/sagemaker.py, autoscaling.py): ``--dry-run`` prints it and stops;
4. the plan is applied with progress; an update that SageMaker rolled back leaves the previous
   release serving, and this release's model and config are deleted again: the command says so
   and exits non-zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from deploy.aws.checks import check_release
from deploy.aws.image import EcrPusher, resolve_image
from deploy.aws.sagemaker import COMPONENT_WAIT, Resolved, deploy_plan, transform_plan
from deploy.aws.settings import AwsSettings
from deploy.aws.state import AwsState, read_state
from deploy.aws.weights import Packager, resolve_weights
from deploy.plan import Applied, Call, Plan, PlanClients, Wait, apply, poll_until, render
from deploy.release import release_id, versioned
from deploy.aws.s3 import S3_NO_KEY, error_of
from runners.errors import DeployError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    text: str  # the plan as printed (dry run) or the summary (applied)
    resolved: Resolved | None = None
    applied: bool = False


def component_in_service(sm: Any, params: dict[str, Any], timeout_s: float, delay_s: float) -> None:
    """DescribeInferenceComponent until InService (boto3 has no waiter for inference components)."""
    poll_until(lambda: sm.describe_inference_component(**params),
               lambda d: d["InferenceComponentStatus"] == "InService",
               lambda d: d.get("FailureReason") if d["InferenceComponentStatus"] == "Failed" else None,
               timeout_s, delay_s, f"inference component {params['InferenceComponentName']}")


def component_deleted(sm: Any, params: dict[str, Any], timeout_s: float, delay_s: float) -> None:
    def describe() -> dict[str, Any]:
        try:
            return sm.describe_inference_component(**params)
        except Exception as exc:
            if "Could not find" in str(exc) or "not found" in str(exc).lower():
                return {"InferenceComponentStatus": "Deleted"}
            raise
    poll_until(describe, lambda d: d["InferenceComponentStatus"] == "Deleted",
               lambda d: d.get("FailureReason") if d["InferenceComponentStatus"] == "Failed" else None,
               timeout_s, delay_s, f"deleting inference component {params['InferenceComponentName']}")


POLLS = {COMPONENT_WAIT: component_in_service, "inference_component_deleted": component_deleted}


def read_or_assume(clients: Any, endpoint: str, dry_run: bool, batch: bool = False) -> AwsState:
    if clients.has_credentials():
        return read_state(clients, endpoint, batch=batch)
    if not dry_run:
        raise DeployError("no AWS credentials found (environment, ~/.aws, SSO or instance role); configure them, "
                          "or add --dry-run to see the plan offline")
    return AwsState(offline=True)


def _bucket_exists(clients: Any, offline: bool) -> Callable[[str, str], bool | None]:
    def exists(bucket: str, key: str) -> bool | None:
        if offline:
            return None
        s3 = clients("s3")
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return True
        except Exception as exc:
            if error_of(exc).get("Code") in S3_NO_KEY:
                try:
                    s3.head_bucket(Bucket=bucket)
                    return False
                except Exception:
                    return None
            raise
    return exists


def resolve(s: AwsSettings, clients: Any, state: AwsState, dry_run: bool) -> tuple[Resolved, Plan]:
    """The release: image, weights, role, sizes; and the calls that prepare them (push, upload)."""
    account = clients.account() if not state.offline else "123456789012"
    region = clients.region
    image = resolve_image(s, clients, account, region, offline=state.offline)
    bucket = s.bucket or f"segany-{account}-{region}"
    weights = resolve_weights(s.checkpoint, bucket, s.model, _bucket_exists(clients, state.offline), region)
    model = s.model or weights.model_type or image.facts.baked_model or "vit_h"
    sizing = check_release(s, image.facts, model, weights.downloaded_at_start)
    settings = s.model_copy(update={"memory_mb": sizing.memory_mb}) if s.mode == "serverless" else s
    role = s.role_arn or f"arn:aws:iam::{account}:role/{s.endpoint}-sagemaker"
    identity = {"image": image.identity, "weights": weights.digest or s.checkpoint, "model": model,
                "settings": settings.model_dump(exclude={"poll_s", "oci_archive", "local_image", "image", "checkpoint"}),
                "role": role, "startup": sizing.startup_s}
    resolved = Resolved(settings, image.uri, model, release_id(identity), role, weights.model_data_url,
                        weights.checkpoint_env, sizing.startup_s, sizing.download_s)
    notes = tuple(sizing.notes) + (() if s.model or weights.model_type or image.facts.baked_model else
                                   ("model type unknown (no --model, no image label): sized for vit_h",))
    prepare = Plan(image.calls + weights.upload, notes)
    if s.create_role and not s.role_arn:
        from deploy.aws.role import role_plan

        prepare = prepare + role_plan(resolved, account, clients if not state.offline else None)
    return resolved, prepare


def deploy(s: AwsSettings, clients: Any, *, dry_run: bool, progress: Any = None) -> Outcome:
    state = read_or_assume(clients, s.endpoint, dry_run, batch=s.mode == "batch")
    if state.endpoint is not None and s.mode != "batch" and not state.endpoint_tags.get("segany:app"):
        raise DeployError(f"an endpoint named {s.endpoint} exists and was not made by segany (no segany tags); "
                          "it is left alone: choose another --endpoint")
    resolved, prepare = resolve(s, clients, state, dry_run)
    if s.mode == "batch":
        return _batch(resolved, state, prepare, clients, dry_run, progress)
    plan = prepare + deploy_plan(resolved, state)
    title = f"segany deploy aws: {s.mode} endpoint {s.endpoint}, release {resolved.release}"
    if dry_run:
        return Outcome(plan, render(plan, title + " (dry run: nothing is changed)"), resolved)
    applied = Applied()
    extra = {"weights": Packager(), "registry": EcrPusher(clients, s.registry, progress)}
    try:
        apply(plan, PlanClients(clients, extra), poll_s=s.poll_s, polls=POLLS, progress=progress, applied=applied)
    except DeployError as exc:
        raise DeployError(f"{exc.message}. {_after_failure(resolved, clients, applied, state)}") from exc
    _check_update(resolved, clients, applied, state)
    return Outcome(plan, title, resolved, applied=True)


def _after_failure(r: Resolved, clients: Any, applied: Applied, state: AwsState) -> str:
    """Remove this release's model and config when nothing serves them; say what still serves."""
    endpoint = _describe_endpoint(clients, r.settings.endpoint)
    serving = endpoint.get("EndpointConfigName") if endpoint else None
    removed = []
    if serving != r.config_name:
        sm = clients("sagemaker")
        for call in applied.done:
            try:
                if call.operation == "create_endpoint_config":
                    sm.delete_endpoint_config(EndpointConfigName=r.config_name)
                    removed.append(f"endpoint config {r.config_name}")
                elif call.operation == "create_model" and serving is not None:
                    sm.delete_model(ModelName=r.name)
                    removed.append(f"model {r.name}")
            except Exception as exc:  # report, never hide
                removed.append(f"(could not delete {call.params.get('ModelName') or r.name}: {exc})")
    what = (f"release {state.release_of_config(serving) or serving} keeps serving {r.settings.endpoint}"
            if serving else f"endpoint {r.settings.endpoint} is not serving")
    return f"{what}; removed this release's {', '.join(removed) or 'nothing'}. Retry, or see segany status aws --endpoint {r.settings.endpoint}"


def _describe_endpoint(clients: Any, name: str) -> dict[str, Any] | None:
    try:
        return clients("sagemaker").describe_endpoint(EndpointName=name)
    except Exception:
        return None


def _check_update(r: Resolved, clients: Any, applied: Applied, state: AwsState) -> None:
    """An update SageMaker rolled back ends InService on the old config: that is a failure."""
    if "update" not in applied.answers:
        return
    endpoint = _describe_endpoint(clients, r.settings.endpoint) or {}
    if endpoint.get("EndpointConfigName") == r.config_name:
        return
    reason = endpoint.get("FailureReason") or "SageMaker rolled the update back"
    raise DeployError(f"the update to release {r.release} failed ({reason}); {_after_failure(r, clients, applied, state)}")


def _batch(r: Resolved, state: AwsState, prepare: Plan, clients: Any, dry_run: bool, progress: Any) -> Outcome:
    from deploy.aws.batch import job_name_for, write_manifest

    s = r.settings
    name, done = job_name_for(r, state, clients if not state.offline else None)
    title = f"segany deploy aws: batch {s.endpoint}, release {r.release}, job {name}"
    if done:
        return Outcome(Plan(), f"{title}: already completed; results under {s.output}/{name}/", r, applied=False)
    plan = prepare + transform_plan(r, state, name)
    if dry_run:
        return Outcome(plan, render(plan, title + " (dry run: nothing is changed)"), r)
    extra = {"weights": Packager(), "registry": EcrPusher(clients, s.registry, progress)}
    try:
        apply(plan, PlanClients(clients, extra), poll_s=s.poll_s, polls=POLLS, progress=progress)
    except DeployError as exc:
        manifest = write_manifest(r, name, clients)
        raise DeployError(f"{exc.message}; manifest of what ran and failed: {manifest}") from exc
    manifest = write_manifest(r, name, clients)
    return Outcome(plan, f"{title}: completed; manifest {manifest}", r, applied=True)


def rollback_plan(endpoint: str, state: AwsState) -> Plan:
    """Back to the release before the serving one (by creation time of our configs, or models for
    an inference component)."""
    if state.endpoint is None:
        raise DeployError(f"no endpoint {endpoint} to roll back")
    if state.component is not None:
        current = state.component["Specification"]["ModelName"]
        names = [m.name for m in state.models]
        if current not in names or names.index(current) == 0:
            raise DeployError(f"{endpoint} serves its first release ({current}); there is no earlier one to return to")
        previous = names[names.index(current) - 1]
        spec = {**state.component["Specification"], "ModelName": previous}
        spec = {k: v for k, v in spec.items() if k in ("ModelName", "StartupParameters", "ComputeResourceRequirements")}
        return Plan((Call("sagemaker", "update_inference_component", {"InferenceComponentName": endpoint, "Specification": spec},
                          f"inference component {endpoint} back to {previous}", wait=_wait_component(endpoint)),))
    names = [c.name for c in state.configs]
    current = state.serving_config
    if current not in names or names.index(current) == 0:
        raise DeployError(f"{endpoint} serves its first release ({current}); there is no earlier one to return to")
    previous = names[names.index(current) - 1]
    return Plan((Call("sagemaker", "update_endpoint", {
        "EndpointName": endpoint, "EndpointConfigName": previous, "RetainAllVariantProperties": True,
    }, f"endpoint {endpoint} back to {previous}", key="update",
        wait=Wait("sagemaker", "endpoint_in_service", {"EndpointName": endpoint})),))


def _wait_component(name: str) -> Wait:
    return Wait("sagemaker", COMPONENT_WAIT, {"InferenceComponentName": name})


def rollback(endpoint: str, clients: Any, *, dry_run: bool, poll_s: float = 15, progress: Any = None) -> Outcome:
    state = read_or_assume(clients, endpoint, dry_run)
    plan = rollback_plan(endpoint, state)
    title = f"segany deploy aws --rollback: endpoint {endpoint}"
    if dry_run:
        return Outcome(plan, render(plan, title + " (dry run: nothing is changed)"))
    apply(plan, clients, poll_s=poll_s, polls=POLLS, progress=progress)
    target = plan.calls[0].params.get("EndpointConfigName") or plan.calls[0].params["Specification"]["ModelName"]
    endpoint_now = _describe_endpoint(clients, endpoint) or {}
    if plan.calls[0].operation == "update_endpoint" and endpoint_now.get("EndpointConfigName") != target:
        raise DeployError(f"the rollback to {target} failed ({endpoint_now.get('FailureReason', 'rolled back')}); "
                          f"{endpoint_now.get('EndpointConfigName')} keeps serving")
    return Outcome(plan, f"{endpoint} serves {target} again", applied=True)


__all__ = ["deploy", "rollback", "rollback_plan", "Outcome", "versioned"]
