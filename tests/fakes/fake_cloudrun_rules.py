"""What the fake Cloud Run Admin API v2 refuses, and the defaults it fills in (see fake_cloudrun.py).

Every rule cites the page that documents it. Resources here are proto3-JSON dicts as
``json_format.MessageToDict`` gives them: camelCase keys, enum names, durations like "300s",
and no key at all for a field the client left at 0 / false / "" (proto3 omits them), so an
absent key means "use Cloud Run's default".
"""

from __future__ import annotations

import copy
import re
from typing import Any

DOCS = "https://cloud.google.com/run/docs"
DOC_CREATE = f"{DOCS}/reference/rest/v2/projects.locations.services/create"
DOC_MEMORY = f"{DOCS}/configuring/services/memory-limits"
DOC_CPU = f"{DOCS}/configuring/services/cpu"
DOC_JOB_MEMORY = f"{DOCS}/configuring/jobs/memory-limits"
DOC_JOB_CPU = f"{DOCS}/configuring/jobs/cpu"
DOC_GPU = f"{DOCS}/configuring/services/gpu"
DOC_TIMEOUT = f"{DOCS}/configuring/request-timeout"
DOC_CONCURRENCY = f"{DOCS}/about-concurrency"
DOC_SCALING = f"{DOCS}/configuring/min-instances"
DOC_PROBES = f"{DOCS}/configuring/healthchecks"
DOC_ENV = f"{DOCS}/container-contract#env-vars"
DOC_REVISIONS = f"{DOCS}/managing/revisions"
DOC_TRAFFIC = f"{DOCS}/rollouts-rollbacks-traffic-migration"
DOC_LABELS = f"{DOCS}/reference/rest/v2/projects.locations.services#Service"
DOC_JOBS = f"{DOCS}/create-jobs"
DOC_RETRIES = f"{DOCS}/configuring/max-retries"

GIB = 1 << 30
MIB = 1 << 20
GPU_KEY = "nvidia.com/gpu"
GPU_ACCELERATORS = ("nvidia-l4",)
# Cloud Run's defaults, applied when the (proto3-omitted) field is absent.
DEFAULT_CPU, DEFAULT_MEMORY = "1000m", "512Mi"
DEFAULT_MAX_INSTANCES = 100  # RevisionScaling.max_instance_count: "server default value of 100"
DEFAULT_CONCURRENCY = 80  # "defaults to 80 when requested CPU >= 1 and defaults to 1 when requested CPU < 1"
DEFAULT_REQUEST_TIMEOUT = "300s"  # request-timeout: "set by default to 5 minutes (300 seconds)"
DEFAULT_TASK_TIMEOUT = "600s"  # TaskTemplate.timeout: "Defaults to 600 seconds"
DEFAULT_MAX_RETRIES = 3  # TaskTemplate.max_retries: "Defaults to 3"
DEFAULT_PORT = 8080


class ApiError(Exception):
    """An error the fake answers with, as google.rpc.Status JSON (``{"error": {...}}``)."""

    def __init__(self, http: int, status: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.http, self.status, self.message, self.field = http, status, message, field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.http, "message": self.message, "status": self.status}
        if self.field is not None:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                 "fieldViolations": [{"field": self.field, "description": self.message}]}]
        return {"error": error}


def invalid(field: str, message: str, doc: str | None = None) -> ApiError:
    text = f"{field}: {message}" + (f" For more troubleshooting guidance, see {doc}" if doc else "")
    return ApiError(400, "INVALID_ARGUMENT", text, field)


def seconds(duration: str | None) -> float:
    """Seconds of a proto3-JSON Duration ("300s", "1.5s")."""
    return float(duration[:-1]) if duration else 0.0


# --- quantities ----------------------------------------------------------------------------

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTOR = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 1 << 10, "Mi": MIB, "Gi": GIB, "Ti": 1 << 40}


def parse_memory(value: str, field: str) -> int:
    match = _MEMORY.match(value.strip())
    if match is None:
        raise invalid(field, f"Invalid value specified for memory: '{value}'.", DOC_MEMORY)
    return int(float(match[1]) * _FACTOR[match[2]])


def parse_cpu(value: str, field: str) -> float:
    try:
        return float(value[:-1]) / 1000 if value.endswith("m") else float(value)
    except ValueError:
        raise invalid(field, f"Invalid value specified for cpu: '{value}'.", DOC_CPU) from None


def _gib(n: int) -> str:
    return f"{n / GIB:g}Gi"


# --- names ---------------------------------------------------------------------------------

# CreateServiceRequest.service_id: "It must begin with letter, and cannot end with hyphen; must
# contain fewer than 50 characters" (DOC_CREATE); lowercase letters, digits and hyphens only.
SERVICE_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,47}[a-z0-9])?$")
JOB_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label, as for jobs in gcloud
TAG = re.compile(r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$")
RESERVED_LABEL_PREFIXES = ("run.googleapis.com/", "cloud.googleapis.com/", "serving.knative.dev/",
                           "autoscaling.knative.dev/")
# Container runtime contract: these variables are set by Cloud Run and "cannot be set" (DOC_ENV).
RESERVED_ENV = {"service": {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"},
                "job": {"CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX",
                        "CLOUD_RUN_TASK_ATTEMPT", "CLOUD_RUN_TASK_COUNT"}}


def check_id(value: str, kind: str) -> None:
    pattern, field = (SERVICE_ID, "service_id") if kind == "service" else (JOB_ID, "job_id")
    if not value:
        raise invalid(field, f"The {kind} id is required.", DOC_CREATE)
    if not pattern.match(value):
        limit = "fewer than 50" if kind == "service" else "at most 63"
        raise invalid(field, f"Invalid {kind} id '{value}': it may only contain lowercase letters, digits and "
                      f"hyphens, must begin with a letter, cannot end with a hyphen and must contain {limit} "
                      "characters.", DOC_CREATE)


def check_revision_name(revision: str, service_id: str, field: str) -> None:
    """RevisionTemplate.revision: revision names are ``SERVICE-SUFFIX`` (gcloud's --revision-suffix)."""
    if not revision.startswith(service_id + "-") or not JOB_ID.match(revision):
        raise invalid(field, f"Revision name '{revision}' must be prefixed by the name of the enclosing Service "
                      f"('{service_id}-'), and be at most 63 lowercase letters, digits and hyphens.", DOC_REVISIONS)


def _check_metadata(resource: dict[str, Any], path: str) -> None:
    # Service.labels / annotations: these namespaces "are not supported ... and will be rejected".
    for key in ("labels", "annotations"):
        for name in resource.get(key, {}):
            if name.startswith(RESERVED_LABEL_PREFIXES):
                raise invalid(f"{path}.{key}", f"Key '{name}' uses a namespace reserved by Cloud Run.", DOC_LABELS)


# --- containers ----------------------------------------------------------------------------


def _check_resources(container: dict[str, Any], path: str, template: dict[str, Any], kind: str) -> None:
    resources = container.get("resources", {})
    limits = resources.get("limits", {})
    doc_cpu, doc_mem = (DOC_CPU, DOC_MEMORY) if kind == "service" else (DOC_JOB_CPU, DOC_JOB_MEMORY)
    for key in limits:
        if key not in ("cpu", "memory", GPU_KEY):  # ResourceRequirements.limits: only these keys
            raise invalid(f"{path}.resources.limits", f"Unsupported resource '{key}'; only cpu, memory and "
                          f"{GPU_KEY} are supported.", doc_cpu)
    cpu_field, mem_field = f"{path}.resources.limits.cpu", f"{path}.resources.limits.memory"
    cpu = parse_cpu(limits.get("cpu", DEFAULT_CPU), cpu_field)
    memory = parse_memory(limits.get("memory", DEFAULT_MEMORY), mem_field)
    # cpu page: "The maximum amount of vCPU you can configure is 8 vCPU", minimum 0.08, and
    # "Values greater than 1 must be integer values" (the table lists 1, 2, 4, 6, 8).
    if cpu < 0.08 or cpu > 8 or (cpu > 1 and cpu not in (2, 4, 6, 8)):
        raise invalid(cpu_field, f"Invalid value specified for cpu: '{limits['cpu']}'. Supported values are 1, 2, "
                      "4, 6 or 8, or a value between 0.08 and 1.", doc_cpu)
    # memory page: "The maximum amount of memory you can configure is 32 gibibyte (32 Gi)".
    if memory > 32 * GIB:
        raise invalid(mem_field, f"Invalid value specified for memory: '{limits['memory']}'. The maximum is 32Gi.",
                      doc_mem)
    if template.get("executionEnvironment") == "EXECUTION_ENVIRONMENT_GEN2" and memory < 512 * MIB:
        raise invalid(mem_field, "The second generation execution environment needs at least 512Mi of memory.",
                      doc_mem)
    # memory page, "Required minimum CPUs": more than 4/8/16/24 GiB needs 2/4/6/8 vCPU; cpu page:
    # under 1 vCPU, more than 512MiB needs 0.5 vCPU and more than 1GiB needs 1 vCPU.
    need = 8 if memory > 24 * GIB else 6 if memory > 16 * GIB else 4 if memory > 8 * GIB else \
        2 if memory > 4 * GIB else 1 if memory > GIB else 0.5 if memory > 512 * MIB else 0
    if cpu < need:
        raise invalid(mem_field, f"Invalid value specified for memory. Memory of {_gib(memory)} requires at least "
                      f"{need:g} CPU, but {cpu:g} CPU was requested.", doc_mem)
    # cpu page, "vCPU and memory table": 4 vCPU needs 2 to 16 GiB, 6 and 8 vCPU need at least 4 GiB.
    floor = 4 * GIB if cpu >= 6 else 2 * GIB if cpu >= 4 else 0
    if memory < floor:
        raise invalid(mem_field, f"Invalid value specified for memory. For {cpu:g} CPU, memory must be at least "
                      f"{_gib(floor)}.", doc_cpu)
    if cpu < 1 and kind == "service":  # cpu page: requirements "If you use less than 1 vCPU"
        if template.get("maxInstanceRequestConcurrency", 1) > 1:
            raise invalid(cpu_field, "Total cpu < 1 is not supported with concurrency > 1: set "
                          "max_instance_request_concurrency to 1.", doc_cpu)
        if resources and not resources.get("cpuIdle"):
            raise invalid(cpu_field, "Total cpu < 1 requires request-based billing (cpu_idle = true).", doc_cpu)
        if template.get("executionEnvironment") == "EXECUTION_ENVIRONMENT_GEN2":
            raise invalid(cpu_field, "Total cpu < 1 requires the first generation execution environment.", doc_cpu)
    if GPU_KEY in limits:
        _check_gpu(limits[GPU_KEY], cpu, memory, resources, template, path, kind)


def _check_gpu(count: str, cpu: float, memory: int, resources: dict[str, Any], template: dict[str, Any],
               path: str, kind: str) -> None:
    field = f"{path}.resources.limits"
    # ResourceRequirements.limits: "The only supported 'nvidia.com/gpu' value is '1'".
    if count != "1":
        raise invalid(f"{field}.{GPU_KEY}", f"Invalid value '{count}' for {GPU_KEY}: the only supported value is "
                      "'1'.", DOC_GPU)
    accelerator = template.get("nodeSelector", {}).get("accelerator", "")
    if accelerator not in GPU_ACCELERATORS:
        raise invalid("node_selector.accelerator", f"A GPU needs node_selector.accelerator set to one of "
                      f"{', '.join(GPU_ACCELERATORS)} (got '{accelerator}').", DOC_GPU)
    # gpu page: "You must use a minimum of 4 CPU and 16 GiB of memory."
    if cpu < 4 or memory < 16 * GIB:
        raise invalid(field, f"A GPU needs a minimum of 4 CPU and 16Gi of memory (got {cpu:g} CPU and "
                      f"{_gib(memory)}).", DOC_GPU)
    # gpu page: CPU must be always allocated (instance-based billing), i.e. cpu_idle false.
    if kind == "service" and resources.get("cpuIdle"):
        raise invalid(f"{path}.resources.cpu_idle", "A GPU needs CPU always allocated (instance-based billing): "
                      "cpu_idle must be false.", DOC_GPU)


def _check_probe(probe: dict[str, Any], field: str, which: str) -> None:
    """Probe limits (DOC_PROBES and the Probe message): startup probes allow period and initial
    delay up to 240 s, liveness probes up to 3600 s; timeout <= period; exactly one action."""
    actions = [k for k in ("httpGet", "tcpSocket", "grpc") if k in probe]
    if len(actions) != 1:
        raise invalid(field, "Exactly one of httpGet, tcpSocket, or grpc must be specified.", DOC_PROBES)
    if which == "livenessProbe" and actions == ["tcpSocket"]:
        raise invalid(field, "Liveness probes support httpGet and grpc only.", DOC_PROBES)
    top = 240 if which == "startupProbe" else 3600
    period = probe.get("periodSeconds", 10)
    timeout = probe.get("timeoutSeconds", 1)
    if not 1 <= period <= top:
        raise invalid(f"{field}.period_seconds", f"period_seconds must be between 1 and {top} (got {period}).",
                      DOC_PROBES)
    if not 1 <= timeout <= period:
        raise invalid(f"{field}.timeout_seconds", f"timeout_seconds must be between 1 and period_seconds "
                      f"({period}) (got {timeout}).", DOC_PROBES)
    if not 0 <= probe.get("initialDelaySeconds", 0) <= top:
        raise invalid(f"{field}.initial_delay_seconds", f"initial_delay_seconds must be between 0 and {top}.",
                      DOC_PROBES)
    if probe.get("failureThreshold", 3) < 1:
        raise invalid(f"{field}.failure_threshold", "failure_threshold must be at least 1.", DOC_PROBES)
    path = probe.get("httpGet", {}).get("path", "/")
    if "httpGet" in probe and not path.startswith("/"):
        raise invalid(f"{field}.http_get.path", f"The probe path must be absolute (got '{path}').", DOC_PROBES)
    port = probe.get(actions[0], {}).get("port", DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise invalid(f"{field}.{actions[0]}.port", "The probe port must be between 1 and 65535.", DOC_PROBES)


def check_env(env: list[dict[str, Any]], field: str, kind: str) -> None:
    for i, var in enumerate(env):
        name = var.get("name", "")
        if not name or "=" in name:
            raise invalid(f"{field}[{i}].name", f"Invalid environment variable name '{name}'.", DOC_ENV)
        if name in RESERVED_ENV[kind]:
            raise invalid(f"{field}[{i}].name", f"The environment variable '{name}' is reserved by Cloud Run "
                          "and cannot be set.", DOC_ENV)


def _check_containers(template: dict[str, Any], path: str, kind: str) -> None:
    containers = template.get("containers", [])
    if not 1 <= len(containers) <= 10:
        raise invalid(f"{path}.containers", "Between 1 and 10 containers are required.", DOC_CREATE)
    if kind == "service" and len(containers) > 1 and sum(1 for c in containers if c.get("ports")) != 1:
        raise invalid(f"{path}.containers", "With several containers, exactly one must expose a port.", DOC_CREATE)
    for i, container in enumerate(containers):
        field = f"{path}.containers[{i}]"
        if not container.get("image"):
            raise invalid(f"{field}.image", "A container image is required.", DOC_CREATE)
        if len(container.get("ports", [])) > 1:
            raise invalid(f"{field}.ports", "Only a single port can be specified.", DOC_CREATE)
        for port in container.get("ports", []):
            if not 1 <= port.get("containerPort", DEFAULT_PORT) <= 65535:
                raise invalid(f"{field}.ports", "container_port must be between 1 and 65535.", DOC_CREATE)
        check_env(container.get("env", []), f"{field}.env", kind)
        _check_resources(container, field, template, kind)
        for which in ("startupProbe", "livenessProbe", "readinessProbe"):
            if which in container:
                _check_probe(container[which], f"{field}.{which}", which)


# --- services ------------------------------------------------------------------------------


def check_service(service: dict[str, Any], service_id: str) -> None:
    """Everything checkable from the Service alone (traffic is checked by :func:`check_traffic`)."""
    _check_metadata(service, "service")
    template = service.get("template")
    if not template:
        raise invalid("service.template", "A revision template is required.", DOC_CREATE)
    _check_metadata(template, "service.template")
    if template.get("revision"):
        check_revision_name(template["revision"], service_id, "service.template.revision")
    # request-timeout page: "can be extended up to 60 minutes (3600 seconds)".
    if "timeout" in template and not 1 <= seconds(template["timeout"]) <= 3600:
        raise invalid("service.template.timeout", f"Invalid request timeout {template['timeout']}: it must be "
                      "between 1s and 3600s.", DOC_TIMEOUT)
    # about-concurrency: "you can increase this to a maximum of 1000".
    concurrency = template.get("maxInstanceRequestConcurrency", 0)
    if not 0 <= concurrency <= 1000:
        raise invalid("service.template.max_instance_request_concurrency", f"Invalid concurrency {concurrency}: "
                      "it must be between 1 and 1000.", DOC_CONCURRENCY)
    for field, scaling in (("service.template.scaling", template.get("scaling", {})),
                           ("service.scaling", service.get("scaling", {}))):
        low, high = scaling.get("minInstanceCount", 0), scaling.get("maxInstanceCount")
        if low < 0 or (high is not None and high < 0):
            raise invalid(field, "Instance counts cannot be negative.", DOC_SCALING)
        if high is not None and low > high:  # min-instances page: min cannot exceed max
            raise invalid(f"{field}.min_instance_count", f"min_instance_count ({low}) must not be greater than "
                          f"max_instance_count ({high}).", DOC_SCALING)
    _check_containers(template, "service.template", "service")
    if template.get("nodeSelector") and not any(
            GPU_KEY in c.get("resources", {}).get("limits", {}) for c in template["containers"]):
        raise invalid("service.template.node_selector", f"node_selector needs a container with a {GPU_KEY} limit.",
                      DOC_GPU)


def check_traffic(traffic: list[dict[str, Any]], service_id: str, revisions: set[str]) -> None:
    """TrafficTarget entries: a type, an existing revision for _REVISION (``revisions`` includes
    the one this request creates), percents summing to 100, unique valid tags (DOC_TRAFFIC)."""
    tags: set[str] = set()
    total = 0
    for i, target in enumerate(traffic):
        field = f"service.traffic[{i}]"
        kind = target.get("type", "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED")
        revision = target.get("revision", "").rsplit("/", 1)[-1]
        if kind == "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED":
            raise invalid(f"{field}.type", "The traffic target type must be specified.", DOC_TRAFFIC)
        if kind == "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST" and revision:
            raise invalid(f"{field}.revision", "A LATEST traffic target cannot name a revision.", DOC_TRAFFIC)
        if kind == "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION":
            if not revision:
                raise invalid(f"{field}.revision", "A REVISION traffic target needs a revision.", DOC_TRAFFIC)
            if revision not in revisions:
                raise invalid(f"{field}.revision", f"Revision '{revision}' referenced in traffic not found in "
                              f"service '{service_id}'.", DOC_TRAFFIC)
        percent = target.get("percent", 0)
        if not 0 <= percent <= 100:
            raise invalid(f"{field}.percent", f"Invalid percent {percent}: it must be between 0 and 100.",
                          DOC_TRAFFIC)
        total += percent
        tag = target.get("tag")
        if tag is not None:
            if not TAG.match(tag):
                raise invalid(f"{field}.tag", f"Invalid tag '{tag}': use lowercase letters, digits and hyphens, "
                              "beginning with a letter and not ending with a hyphen.", DOC_TRAFFIC)
            if tag in tags:
                raise invalid(f"{field}.tag", f"Duplicate tag '{tag}'.", DOC_TRAFFIC)
            tags.add(tag)
    if traffic and total != 100:
        raise invalid("service.traffic", f"Traffic percents must sum to 100, but they sum to {total}.", DOC_TRAFFIC)


def default_service(service: dict[str, Any], project_number: str) -> dict[str, Any]:
    """The Service with Cloud Run's server-side defaults filled in (what a GET returns)."""
    service = copy.deepcopy(service)
    service.setdefault("ingress", "INGRESS_TRAFFIC_ALL")
    service.setdefault("launchStage", "GA")
    if not service.get("traffic"):
        service["traffic"] = [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]
    template = service["template"]
    template.setdefault("scaling", {}).setdefault("maxInstanceCount", DEFAULT_MAX_INSTANCES)
    template.setdefault("timeout", DEFAULT_REQUEST_TIMEOUT)
    template.setdefault("serviceAccount", f"{project_number}-compute@developer.gserviceaccount.com")
    for container in template["containers"]:
        _default_container(container, service_mode=True)
    cpu = parse_cpu(template["containers"][0]["resources"]["limits"]["cpu"], "cpu")
    template.setdefault("maxInstanceRequestConcurrency", DEFAULT_CONCURRENCY if cpu >= 1 else 1)
    return service


def _default_container(container: dict[str, Any], service_mode: bool) -> None:
    if "resources" not in container:
        # ResourceRequirements.cpu_idle is "true by default", but only when resources is unset.
        container["resources"] = {"cpuIdle": True} if service_mode else {}
    limits = container["resources"].setdefault("limits", {})
    limits.setdefault("cpu", DEFAULT_CPU)
    limits.setdefault("memory", DEFAULT_MEMORY)
    if not service_mode:
        return
    ports = container.get("ports")
    if ports:
        ports[0].setdefault("name", "http1")
        ports[0].setdefault("containerPort", DEFAULT_PORT)
    port = ports[0]["containerPort"] if ports else DEFAULT_PORT
    if ports and "startupProbe" not in container:  # healthchecks page: the default TCP startup probe
        container["startupProbe"] = {"timeoutSeconds": 240, "periodSeconds": 240, "failureThreshold": 1,
                                     "tcpSocket": {"port": port}}
    for which in ("startupProbe", "livenessProbe"):
        probe = container.get(which)
        if probe is None:
            continue
        probe.setdefault("timeoutSeconds", 1)
        probe.setdefault("periodSeconds", 10)
        probe.setdefault("failureThreshold", 3)
        for action in ("httpGet", "tcpSocket", "grpc"):
            if action in probe:
                probe[action].setdefault("port", port)
        if "httpGet" in probe:
            probe["httpGet"].setdefault("path", "/")


def default_ports(service: dict[str, Any]) -> None:
    """A lone container with no port gets the default one (name http1, 8080)."""
    containers = service.get("template", {}).get("containers", [])
    if len(containers) == 1 and not containers[0].get("ports"):
        containers[0]["ports"] = [{"name": "http1", "containerPort": DEFAULT_PORT}]


# --- jobs ----------------------------------------------------------------------------------


def check_job(job: dict[str, Any]) -> None:
    _check_metadata(job, "job")
    execution = job.get("template")
    if not execution or not execution.get("template"):
        raise invalid("job.template", "An execution template with a task template is required.", DOC_JOBS)
    _check_metadata(execution, "job.template")
    check_task_count(execution.get("taskCount", 1), "job.template.task_count")
    if execution.get("parallelism", 0) < 0:
        raise invalid("job.template.parallelism", "parallelism cannot be negative.", DOC_JOBS)
    task = execution["template"]
    gpu = bool(task.get("nodeSelector"))
    check_task_timeout(task.get("timeout"), "job.template.template.timeout", gpu)
    retries = task.get("maxRetries", DEFAULT_MAX_RETRIES)
    if not 0 <= retries <= 10:  # max-retries page: "an integer from 0 to 10"
        raise invalid("job.template.template.max_retries", f"Invalid max_retries {retries}: it must be between 0 "
                      "and 10.", DOC_RETRIES)
    _check_containers(task, "job.template.template", "job")
    if gpu and not any(GPU_KEY in c.get("resources", {}).get("limits", {}) for c in task["containers"]):
        raise invalid("job.template.template.node_selector", f"node_selector needs a container with a {GPU_KEY} "
                      "limit.", DOC_GPU)


def check_task_count(count: int, field: str) -> None:
    if not 1 <= count <= 10000:  # create-jobs page: "up to 10,000 tasks"
        raise invalid(field, f"Invalid task_count {count}: it must be between 1 and 10000.", DOC_JOBS)


def check_task_timeout(timeout: str | None, field: str, gpu: bool) -> None:
    # create-jobs page: task timeout "up to 168 hours (7 days). For tasks using GPUs, the maximum
    # available timeout is 1 hour."
    if timeout is None:
        return
    top = 3600 if gpu else 168 * 3600
    if not 0 < seconds(timeout) <= top:
        raise invalid(field, f"Invalid task timeout {timeout}: it must be positive and at most {top}s"
                      f"{' for tasks using GPUs' if gpu else ' (168 hours)'}.", DOC_JOBS)


def default_job(job: dict[str, Any], project_number: str) -> dict[str, Any]:
    job = copy.deepcopy(job)
    job.setdefault("launchStage", "GA")
    execution = job["template"]
    execution.setdefault("taskCount", 1)
    task = execution["template"]
    task.setdefault("maxRetries", DEFAULT_MAX_RETRIES)
    task.setdefault("timeout", DEFAULT_TASK_TIMEOUT)
    task.setdefault("serviceAccount", f"{project_number}-compute@developer.gserviceaccount.com")
    for container in task["containers"]:
        _default_container(container, service_mode=False)
    return job
