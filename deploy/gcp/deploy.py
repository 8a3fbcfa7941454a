"""``segany deploy gcp``: plan, then apply, for a Cloud Run service or (``--job``) a Cloud Run job;
``--rollback``; ``segany status gcp``; ``segany destroy gcp``.

The image comes from ``--image``, or is pushed to Artifact Registry
(``REGION-docker.pkg.dev/PROJECT/REPOSITORY/segment-anywhere``) with only the layers it lacks
(deploy/registry.py, the same push as SageMaker's). The release is the digest of the image,
the weights and the settings; its revision is ``SERVICE-RELEASE``, tagged ``r-RELEASE``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from deploy.aws.checks import ImageFacts
from deploy.gcp.cloudrun import INVOKER, REVISION, Release, job_plan, service_plan, startup_budget_s
from deploy.gcp.session import as_dict
from deploy.image_source import is_local_registry, release_tag, source_of
from deploy.gcp.settings import GcpSettings
from deploy.plan import OPERATION, Call, Plan, PlanClients, Wait, apply, render
from deploy.release import APP, release_id
from runners.errors import ConfigError, DeployError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcpOutcome:
    plan: Plan
    text: str
    release: Release | None = None
    answers: dict[str, Any] | None = None


def _not_found(exc: Exception) -> bool:
    return type(exc).__name__ in ("NotFound",) or getattr(exc, "code", None) == 404


def read_current(clients: Any, s: GcpSettings, dry_run: bool) -> tuple[dict | None, dict | None, bool]:
    """(the service or job as it is, its IAM policy, offline)."""
    if not clients.has_credentials():
        if not dry_run:
            raise DeployError("no Google Cloud credentials: run `gcloud auth application-default login`, "
                              "or add --dry-run to see the plan offline")
        return None, None, True
    kind = "jobs" if s.job else "services"
    name = f"projects/{s.project}/locations/{s.region}/{kind}/{s.service}"
    try:
        current = as_dict(getattr(clients(kind), "get_job" if s.job else "get_service")(name=name))
    except Exception as exc:
        if not _not_found(exc):
            raise DeployError(f"reading {name} failed: {exc}") from None
        return None, None, False
    if current.get("labels", {}).get("segany-app") != APP:
        raise DeployError(f"{name} exists and was not made by segany (no segany labels); it is left alone: choose another --service")
    policy = None if s.job else as_dict(clients("services").get_iam_policy(request={"resource": name}))
    return current, policy, False


def resolve_image(s: GcpSettings, clients: Any, offline: bool) -> tuple[str, str, ImageFacts, tuple[Call, ...]]:
    """(image URI, identity for the release, what its labels say, the push calls)."""
    if s.image:
        return s.image, s.image, ImageFacts(None), ()
    from deploy.registry import plan_push, read_source

    source = source_of(s.oci_archive, s.local_image)
    found = read_source(source)
    registry = s.registry or f"{s.region}-docker.pkg.dev/{s.project}/{s.repository}"
    dest = f"{registry}/segment-anywhere:{release_tag(found.digest)}"
    to_send = found.size_bytes
    calls: list[Call] = []
    if not s.registry:
        calls += _repository_calls(s, clients, offline)
    if not offline and not calls:
        local = is_local_registry(registry)
        to_send = plan_push(source, dest, None if local else _auth(clients, registry), tls_verify=not local).bytes_to_send
    calls.append(Call("registry", "push", {"source": source, "dest": dest},
                      f"push {to_send / 1e6:.1f} MB of {found.size_bytes / 1e6:.1f} MB (layers the registry lacks)"))
    return dest, found.digest, ImageFacts(found.labels, found.size_bytes), tuple(calls)


def _repository_calls(s: GcpSettings, clients: Any, offline: bool) -> list[Call]:
    """Creating the Artifact Registry repository when asked and missing; a missing one not asked
    for stops here, with the fix, before anything is pushed."""
    from deploy.gcp.artifact_registry import ArtifactRegistry, repository_name

    name = repository_name(s.project, s.region, s.repository)
    if not offline and ArtifactRegistry(clients.credentials()).exists(name):
        return []
    if not s.create_repository:
        if offline:
            return []
        raise ConfigError(f"the Artifact Registry repository {name} does not exist: add --create-repository, or "
                          f"gcloud artifacts repositories create {s.repository} --repository-format=docker --location={s.region}")
    return [Call("artifactregistry", "create_repository", {
        "parent": name.rsplit("/repositories/", 1)[0], "repository_id": s.repository,
        "repository": {"format": "DOCKER", "description": "segment-anywhere images", "labels": {"segany-app": APP}}},
        f"Artifact Registry repository {s.repository} ({s.region})")]


def _auth(clients: Any, registry: str) -> Any:
    from deploy.registry import RegistryAuth

    return RegistryAuth(registry.split("/")[0], "oauth2accesstoken", clients.access_token())


class ArtifactPusher:
    """The plan's ``registry`` pseudo-client: an access token at apply time, then the push."""

    def __init__(self, clients: Any, progress: Any) -> None:
        self.clients, self.progress = clients, progress

    def push(self, source: str, dest: str) -> dict[str, Any]:
        from deploy.registry import plan_push, push

        host = dest.split("/")[0]
        local = is_local_registry(host)
        result = push(plan_push(source, dest, None if local else _auth(self.clients, host), tls_verify=not local), self.progress)
        return {"digest": result.digest}


def check_image(s: GcpSettings, facts: ImageFacts, model: str) -> int:
    """Refuse what the image cannot serve; the startup probe's budget in seconds."""
    if s.gpu and facts.device == "cpu":
        raise ConfigError(f"--gpu {s.gpu} with the cpu image: the GPU would idle; build the cuda image "
                          "(segany build --device cuda) or drop --gpu")
    if facts.device == "cuda" and not s.gpu:
        raise ConfigError("the cuda image without --gpu: Cloud Run has no GPU then; add --gpu nvidia-l4 or build the cpu image")
    converts = bool(s.checkpoint) or facts.converted is False or (facts.labels is None and model != "tiny")
    if facts.labels is None and model != "tiny":
        logger.warning("the image's labels are unknown (built elsewhere): if it lacks the converted model, %s is "
                       "converted at start; the startup probe allows for it", model)
    return startup_budget_s(model, converts)


def deploy(s: GcpSettings, clients: Any, *, dry_run: bool, progress: Any = None) -> GcpOutcome:
    current, iam, offline = read_current(clients, s, dry_run)
    failed = (current or {}).get("terminal_condition", {})
    uri, identity, facts, push = resolve_image(s, clients, offline)
    model = s.model or facts.baked_model or "vit_h"
    startup = check_image(s, facts, model)
    settings = s.model_dump(exclude={"poll_s", "image", "oci_archive", "local_image", "no_traffic", "invoker", "allow_unauthenticated"})
    release = Release(s, uri, model, release_id({"image": identity, "model": model, "settings": settings}), startup)
    if (not s.job and current is not None and current.get("template", {}).get("revision") == release.revision
            and not current.get("latest_ready_revision", "").endswith("/" + release.revision)):
        raise DeployError(f"revision {release.revision} of this release never got ready ({failed.get('message', 'see its logs')}); "
                          "a revision name is used once: fix the image or settings (a new release), or roll back")
    plan = Plan(push, ("no Google Cloud credentials were found: planned as if nothing existed yet",) if offline else ())
    plan = plan + (job_plan(release, current) if s.job else service_plan(release, current, iam))
    kind = "job" if s.job else "service"
    title = f"segany deploy gcp: {kind} {s.service} in {s.project}/{s.region}, release {release.release}"
    if dry_run:
        return GcpOutcome(plan, render(plan, title + " (dry run: nothing is changed)"), release)
    try:
        extra: dict[str, Any] = {"registry": ArtifactPusher(clients, progress)}
        if any(call.service == "artifactregistry" for call in plan.calls):
            from deploy.gcp.artifact_registry import ArtifactRegistry

            extra["artifactregistry"] = ArtifactRegistry(clients.credentials())
        applied = apply(plan, PlanClients(clients, extra), progress=progress)
    except DeployError as exc:
        if not s.job and current is not None:
            raise DeployError(f"{exc.message}; the traffic stays where it was (segany status gcp --service {s.service})") from exc
        raise
    answers = dict(applied.answers)
    if s.job:  # the tasks each wrote a manifest: one for the whole run
        from deploy.batch import merge_manifests

        try:
            answers["manifest"] = merge_manifests(s.output or "")
        except Exception as exc:  # the run is done either way: say so, do not fail it
            logger.warning("could not merge the task manifests under %s: %s", s.output, exc)
    return GcpOutcome(plan, title, release, answers)


def revisions(clients: Any, service_name: str) -> list[dict[str, Any]]:
    """Our revisions of the service, oldest first."""
    found = [as_dict(r) for r in clients("revisions").list_revisions(parent=service_name)]
    ours = [r for r in found if r.get("labels", {}).get("segany-app") == APP]
    return sorted(ours, key=lambda r: str(r.get("create_time", "")))


def rollback(s_project: str, region: str, service: str, clients: Any, *, dry_run: bool, progress: Any = None) -> str:
    name = f"projects/{s_project}/locations/{region}/services/{service}"
    if not clients.has_credentials():
        raise DeployError("--rollback reads the service: it needs Google Cloud credentials")
    try:
        current = as_dict(clients("services").get_service(name=name))
    except Exception as exc:
        raise DeployError(f"no service {name} to roll back ({exc})") from None
    shares = [t for t in current.get("traffic_statuses", []) if t.get("percent")]  # as routed, not as asked
    names = [r["name"].rsplit("/", 1)[1] for r in revisions(clients, name)]
    serving = max(shares, key=lambda t: t["percent"]).get("revision") if shares else None
    if serving not in names or names.index(serving) == 0:
        raise DeployError(f"{service} serves {serving or 'its latest revision'}, and no earlier revision of ours is "
                          "there to return to")
    previous = names[names.index(serving) - 1]
    tags = [{"type_": REVISION, "revision": t["revision"], "tag": t["tag"]}
            for t in current.get("traffic", []) if t.get("tag") and t.get("revision")]
    for entry in tags:  # every tag URL stays; the previous revision's entry takes all the traffic
        if entry["revision"] == previous:
            entry["percent"] = 100
            break
    else:
        tags.insert(0, {"type_": REVISION, "revision": previous, "percent": 100})
    spec = {"name": name, "traffic": tags}
    plan = Plan((Call("services", "update_service", {"request": {"service": spec, "update_mask": {"paths": ["traffic"]}}},
                      f"all traffic back to {previous}", wait=Wait("services", OPERATION, {}, timeout_s=900)),))
    if dry_run:
        return render(plan, f"segany deploy gcp --rollback: {service} (dry run: nothing is changed)")
    apply(plan, clients, progress=progress)
    return f"{service}: all traffic on {previous} again (was {serving})"


class ImageDeleter:
    """The plan's ``registry`` pseudo-client for destroy: deletes a revision's image."""

    def __init__(self, clients: Any) -> None:
        self.clients = clients

    def delete_image(self, ref: str) -> dict[str, Any]:
        from deploy.registry import delete_image

        host = ref.split("/")[0]
        local = is_local_registry(host)
        return {"deleted": delete_image(ref, None if local else _auth(self.clients, host), tls_verify=not local)}


def destroy(project: str, region: str, service: str, clients: Any, *, job: bool, dry_run: bool, progress: Any = None,
            delete_images: bool = False) -> str:
    kind = "jobs" if job else "services"
    name = f"projects/{project}/locations/{region}/{kind}/{service}"
    if not clients.has_credentials():
        if not dry_run:
            raise DeployError("no Google Cloud credentials: run `gcloud auth application-default login`")
        plan = Plan(notes=("no Google Cloud credentials were found: planned as if the resource existed",))
        current = {"labels": {"segany-app": APP}}
    else:
        try:
            current = as_dict(getattr(clients(kind), "get_job" if job else "get_service")(name=name))
        except Exception as exc:
            if _not_found(exc):
                return f"nothing to destroy: {name} does not exist"
            raise
        plan = Plan()
    if current.get("labels", {}).get("segany-app") != APP:
        return f"{name} has no segany labels: left alone"
    images = _images_of(clients, name, job, current) if delete_images and clients.has_credentials() else []
    plan = plan + Plan((Call(kind, "delete_job" if job else "delete_service", {"request": {"name": name}},
                             f"delete {kind[:-1]} {service} (its revisions go with it)",
                             wait=Wait(kind, OPERATION, {}, timeout_s=600)),))
    plan = plan + Plan(tuple(Call("registry", "delete_image", {"ref": image}, f"delete image {image}") for image in images),
                       () if delete_images else ("images stay in the registry (add --delete-images to delete them)",))
    if dry_run:
        return render(plan, f"segany destroy gcp: {service} (dry run: nothing is changed)")
    apply(plan, PlanClients(clients, {"registry": ImageDeleter(clients)}), progress=progress)
    return f"deleted {name}" + (f" and {len(images)} image(s)" if images else "; images stay in the registry")


def _images_of(clients: Any, name: str, job: bool, current: dict[str, Any]) -> list[str]:
    """The images our revisions (or the job) run, each once."""
    if job:
        containers = current.get("template", {}).get("template", {}).get("containers", [])
    else:
        containers = [c for r in revisions(clients, name) for c in r.get("containers", [])]
    return sorted({c["image"] for c in containers if c.get("image")})


def status(project: str, region: str, service: str, clients: Any) -> str:
    name = f"projects/{project}/locations/{region}/services/{service}"
    try:
        current = as_dict(clients("services").get_service(name=name))
    except Exception as exc:
        if _not_found(exc):
            return f"no service {name}"
        raise
    lines = [f"service {service}: {current.get('uri', '')}",
             f"  latest ready revision: {current.get('latest_ready_revision', '').rsplit('/', 1)[-1]}"]
    routed = current.get("traffic_statuses", [])  # the split as Cloud Run routes it
    if current.get("terminal_condition", {}).get("state") == "CONDITION_FAILED":
        lines.append(f"  last deploy failed: {current['terminal_condition'].get('message', '')}")
    lines.append("  revisions (oldest first): share, tag, tag URL")
    for revision in revisions(clients, name):
        short = revision["name"].rsplit("/", 1)[1]
        entries = [t for t in routed if t.get("revision") == short]
        percent = sum(t.get("percent", 0) for t in entries)
        tags = ", ".join(t["tag"] for t in entries if t.get("tag"))
        uri = " ".join(t["uri"] for t in entries if t.get("uri"))
        lines.append(f"    {short}  {percent:3d}%  {('tag ' + tags) if tags else ''} {uri}".rstrip())
    policy = as_dict(clients("services").get_iam_policy(request={"resource": name}))
    invokers = [m for b in policy.get("bindings", []) if b["role"] == INVOKER for m in b["members"]]
    private = "none (private: only principals with run.routes.invoke on the project)"
    lines.append(f"  invokers: {', '.join(invokers) or private}")
    return "\n".join(lines)
