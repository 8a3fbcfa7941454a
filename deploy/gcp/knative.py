"""``--emit-yaml FILE``: the release as a Knative Service, for ``gcloud run services replace FILE``.

The portable part (image, ports, env, resources, probes, scale bounds as
``autoscaling.knative.dev/minScale``/``maxScale``, concurrency, timeout, traffic) serves on any
Knative cluster; the ``run.googleapis.com/*`` annotations (CPU throttling, startup CPU boost,
session affinity, execution environment, ingress, GPU node selector and zonal redundancy) mean
something only to Cloud Run (cloud.google.com/run/docs/reference/yaml/v1).
"""

from __future__ import annotations

from typing import Any

from deploy.gcp.cloudrun import Release, container, service_spec

CLOUD_RUN_ONLY = ("run.googleapis.com/cpu-throttling", "run.googleapis.com/startup-cpu-boost",
                  "run.googleapis.com/sessionAffinity", "run.googleapis.com/execution-environment",
                  "run.googleapis.com/ingress", "run.googleapis.com/gpu-zonal-redundancy-disabled")


def _probe(probe: dict[str, Any]) -> dict[str, Any]:
    return {"httpGet": {"path": probe["http_get"]["path"], "port": probe["http_get"]["port"]},
            "periodSeconds": probe["period_seconds"], "timeoutSeconds": probe["timeout_seconds"],
            "failureThreshold": probe["failure_threshold"]}


def knative_service(r: Release, current: dict[str, Any] | None = None) -> dict[str, Any]:
    s = r.settings
    spec = service_spec(r, current)
    c = container(r)
    limits = dict(c["resources"]["limits"])
    template_annotations = {
        "autoscaling.knative.dev/minScale": str(s.min_instances), "autoscaling.knative.dev/maxScale": str(s.max_instances),
        "run.googleapis.com/cpu-throttling": str(s.cpu_idle).lower(),
        "run.googleapis.com/startup-cpu-boost": str(s.startup_cpu_boost).lower(),
        "run.googleapis.com/sessionAffinity": str(s.session_affinity).lower(),
        "run.googleapis.com/execution-environment": "gen2",
    }
    pod: dict[str, Any] = {
        "containerConcurrency": s.resolved_concurrency, "timeoutSeconds": s.timeout_s,
        "containers": [{"image": c["image"], "ports": [{"name": "http1", "containerPort": c["ports"][0]["container_port"]}],
                        "env": c["env"], "resources": {"limits": limits},
                        "startupProbe": _probe(c["startup_probe"]), "livenessProbe": _probe(c["liveness_probe"])}],
    }
    if s.service_account:
        pod["serviceAccountName"] = s.service_account
    if s.gpu:
        pod["nodeSelector"] = {"run.googleapis.com/accelerator": s.gpu}
        template_annotations["run.googleapis.com/gpu-zonal-redundancy-disabled"] = str(not s.gpu_zonal_redundancy).lower()
    traffic = [{k2: v for k2, v in (("revisionName", t.get("revision")), ("percent", t.get("percent")), ("tag", t.get("tag"))) if v is not None}
               for t in spec["traffic"]]
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": s.service, "labels": r.labels(),
                     "annotations": {"run.googleapis.com/ingress": s.ingress}},  # all | internal | internal-and-cloud-load-balancing
        "spec": {"template": {"metadata": {"name": r.revision, "labels": r.labels(), "annotations": template_annotations},
                              "spec": pod},
                 "traffic": traffic},
    }


def emit_yaml(r: Release, path: str, current: dict[str, Any] | None = None) -> str:
    import yaml

    text = yaml.safe_dump(knative_service(r, current), sort_keys=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


