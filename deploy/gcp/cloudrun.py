"""The Cloud Run resources of a release, as a plan (deploy/plan.py): a Service whose template is
the release's revision (``SERVICE-RELEASE``, tagged ``r-RELEASE``), its traffic, its invoker IAM
policy; or, for batch, a Job and one execution of it.

Requests are written as the ``google-cloud-run`` client takes them (proto-plus field names), so
the dry run prints exactly what is sent.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from deploy import limits
from deploy.gcp.settings import GcpSettings
from deploy.plan import OPERATION, Call, Plan, Wait
from deploy.release import APP, versioned

logger = logging.getLogger(__name__)
PORT = 8080
LABELS = ("segany-app", "segany-deployment", "segany-release", "segany-mode")  # GCP label keys take no ':'
INGRESS = {"all": "INGRESS_TRAFFIC_ALL", "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
           "internal-and-cloud-load-balancing": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
INVOKER = "roles/run.invoker"
PROBE_PERIOD_S = 10


@dataclass(frozen=True)
class Release:
    settings: GcpSettings
    image_uri: str
    model_type: str
    release: str
    startup_s: int  # what the startup probe allows: loading, and converting when not baked

    @property
    def parent(self) -> str:
        return f"projects/{self.settings.project}/locations/{self.settings.region}"

    @property
    def name(self) -> str:
        return f"{self.parent}/{'jobs' if self.settings.job else 'services'}/{self.settings.service}"

    @property
    def revision(self) -> str:
        return versioned(self.settings.service, self.release)

    @property
    def tag(self) -> str:
        return f"r-{self.release}"

    def labels(self) -> dict[str, str]:
        return dict(zip(LABELS, (APP, self.settings.service, self.release, "job" if self.settings.job else "service")))

    def env(self) -> list[dict[str, str]]:
        s = self.settings
        values = {"SEGANY_MODEL": self.model_type, **({"SEGANY_CHECKPOINT": s.checkpoint} if s.checkpoint else {}), **s.env}
        return [{"name": k, "value": v} for k, v in values.items()]


def resources(s: GcpSettings) -> dict[str, Any]:
    limits_: dict[str, str] = {"cpu": s.resolved_cpu, "memory": s.resolved_memory}
    if s.gpu:
        limits_["nvidia.com/gpu"] = "1"
    return {"limits": limits_, "cpu_idle": s.cpu_idle, "startup_cpu_boost": s.startup_cpu_boost}


def container(r: Release) -> dict[str, Any]:
    """The service's container: the image's own entrypoint (Cloud Run's contract), probes on the
    service's /readyz (startup: long enough to load, or convert, the model) and /livez."""
    failures = max(3, math.ceil(r.startup_s / PROBE_PERIOD_S))
    return {
        "image": r.image_uri, "ports": [{"name": "http1", "container_port": PORT}], "env": r.env(),
        "resources": resources(r.settings),
        "startup_probe": {"http_get": {"path": "/readyz", "port": PORT}, "period_seconds": PROBE_PERIOD_S,
                          "timeout_seconds": 5, "failure_threshold": failures},
        "liveness_probe": {"http_get": {"path": "/livez", "port": PORT}, "period_seconds": 30, "timeout_seconds": 5,
                           "failure_threshold": 3},
    }


def service_spec(r: Release, current: dict[str, Any] | None) -> dict[str, Any]:
    """The Service of this release; ``current`` (the service as it is) decides the traffic."""
    s = r.settings
    template: dict[str, Any] = {
        "revision": r.revision, "labels": r.labels(),
        "scaling": {"min_instance_count": s.min_instances, "max_instance_count": s.max_instances},
        "max_instance_request_concurrency": s.resolved_concurrency, "timeout": f"{s.timeout_s}s",
        "session_affinity": s.session_affinity, "execution_environment": "EXECUTION_ENVIRONMENT_GEN2",
        "containers": [container(r)],
    }
    if s.service_account:
        template["service_account"] = s.service_account
    if s.gpu:
        template["node_selector"] = {"accelerator": s.gpu}
        template["gpu_zonal_redundancy_disabled"] = not s.gpu_zonal_redundancy
    spec = {"labels": r.labels(), "ingress": INGRESS[s.ingress], "template": template, "traffic": traffic(r, current)}
    if current is not None:
        spec["name"] = r.name
    return spec


def _tagged(current: dict[str, Any] | None, keep: str | None = None) -> list[dict[str, Any]]:
    """The tags the service has (their revisions stay reachable by tag URL), without ``keep``'s revision."""
    return [{"type_": REVISION, "revision": t["revision"], "tag": t["tag"]} for t in (current or {}).get("traffic", [])
            if t.get("tag") and t.get("revision") and t["revision"] != keep]


def serving(current: dict[str, Any]) -> list[dict[str, Any]]:
    """The traffic entries that carry a share."""
    return [dict(t) for t in current.get("traffic", []) if t.get("percent")]


def traffic(r: Release, current: dict[str, Any] | None) -> list[dict[str, Any]]:
    """All traffic to the new revision (Cloud Run moves it once the revision is ready; a revision
    that never gets ready fails the update and the traffic stays where it was), or with
    ``--no-traffic`` none: the new revision only behind its tag URL."""
    new = {"type_": REVISION, "revision": r.revision, "tag": r.tag}
    others = _tagged(current, keep=r.revision)
    if r.settings.no_traffic and current is not None:
        shares = [t for t in serving(current) if t.get("revision") != r.revision]
        return shares + [t for t in others if t["revision"] not in {s.get("revision") for s in shares}] + [new]
    return [{**new, "percent": 100}] + others


def in_place(current: dict[str, Any], spec: dict[str, Any]) -> bool:
    """The service already runs this release with this traffic (a re-run: nothing to do)."""
    def shares(entries: list[dict[str, Any]]) -> list[tuple]:
        return sorted((t.get("revision", ""), t.get("percent", 0), t.get("tag", "")) for t in entries)

    return (current.get("template", {}).get("revision") == spec["template"]["revision"]
            and shares(current.get("traffic", [])) == shares(spec["traffic"]))


def policy_for(s: GcpSettings, current: dict[str, Any] | None) -> dict[str, Any] | None:
    """The invoker bindings asked for, on top of the other roles' bindings; None when unchanged."""
    members = sorted(set(s.invoker) | ({"allUsers"} if s.allow_unauthenticated else set()))
    bindings = [b for b in (current or {}).get("bindings", []) if b["role"] != INVOKER]
    if members:
        bindings.append({"role": INVOKER, "members": members})
    have = sorted((b["role"], tuple(sorted(b["members"]))) for b in (current or {}).get("bindings", []))
    want = sorted((b["role"], tuple(sorted(b["members"]))) for b in bindings)
    if have == want:
        return None
    policy: dict[str, Any] = {"bindings": bindings}
    if current and current.get("etag"):
        policy["etag"] = current["etag"]
    return policy


def service_plan(r: Release, current: dict[str, Any] | None, iam: dict[str, Any] | None) -> Plan:
    s = r.settings
    spec = service_spec(r, current)
    calls: list[Call] = []
    wait = Wait("services", OPERATION, {}, timeout_s=max(900, r.startup_s + 300))
    if current is None:
        calls.append(Call("services", "create_service", {"request": {
            "parent": r.parent, "service_id": s.service, "service": spec}}, f"service {s.service}, revision {r.revision}", wait=wait))
    elif not in_place(current, spec):
        why = f"revision {r.revision}" + (" behind its tag (no traffic)" if s.no_traffic else ", all traffic once ready")
        calls.append(Call("services", "update_service", {"request": {"service": spec}}, why, wait=wait))
    notes = ()
    if s.allow_unauthenticated:
        notes = ("--allow-unauthenticated: allUsers may invoke the service; anyone who finds its URL runs up its bill",)
        logger.warning(notes[0])
    policy = policy_for(s, iam)
    if policy is not None:
        calls.append(Call("services", "set_iam_policy", {"request": {"resource": r.name, "policy": policy}},
                          f"invokers: {', '.join(m for b in policy['bindings'] if b['role'] == INVOKER for m in b['members']) or 'none'}"))
    return Plan(tuple(calls), notes)


def job_spec(r: Release, input_uri: str, output_uri: str) -> dict[str, Any]:
    s = r.settings
    task_container = {
        "image": r.image_uri, "command": ["segany"], "env": r.env(), "resources": {"limits": resources(s)["limits"]},
        "args": ["batch", input_uri, output_uri, "--task", s.task, "--model", r.model_type],
    }
    task: dict[str, Any] = {"containers": [task_container], "max_retries": s.max_retries, "timeout": f"{s.task_timeout_s}s",
                            "execution_environment": "EXECUTION_ENVIRONMENT_GEN2"}
    if s.service_account:
        task["service_account"] = s.service_account
    if s.gpu:
        task["node_selector"] = {"accelerator": s.gpu}
        task["gpu_zonal_redundancy_disabled"] = not s.gpu_zonal_redundancy
    return {"labels": r.labels(), "template": {"labels": r.labels(), "task_count": s.tasks, "parallelism": s.parallelism,
                                               "template": task}}


def job_plan(r: Release, current: dict[str, Any] | None) -> Plan:
    s = r.settings
    spec = job_spec(r, s.input or "", s.output or "")
    wait = Wait("jobs", OPERATION, {}, timeout_s=600)
    calls: list[Call] = []
    if current is None:
        calls.append(Call("jobs", "create_job", {"request": {"parent": r.parent, "job_id": s.service, "job": spec}},
                          f"job {s.service}", wait=wait))
    elif current.get("labels", {}).get("segany-release") != r.release:
        calls.append(Call("jobs", "update_job", {"request": {"job": {**spec, "name": r.name}}}, f"job {s.service} -> release {r.release}", wait=wait))
    calls.append(Call("jobs", "run_job", {"request": {"name": r.name}}, f"run {s.tasks} task(s) over {s.input}",
                      key="execution", wait=Wait("jobs", OPERATION, {}, timeout_s=s.task_timeout_s * (s.max_retries + 1) + 600)))
    return Plan(tuple(calls))


def startup_budget_s(model: str, converts: bool) -> int:
    """Seconds the startup probe allows: loading, plus the conversion when the image lacks it."""
    return int(60 + (limits.CONVERSION_S[model] if converts else 0) * 1.5)
