"""A fake of the Cloud Run Admin API v2 (REST), for the real ``google-cloud-run`` clients.

Serves, on 127.0.0.1 and a free port, the v2 REST surface in proto3 JSON: services (create,
get, list, patch, delete, IAM), their revisions (get, list, delete), jobs (create, get, list,
patch, delete, run, IAM), executions (get, list, delete, cancel) and long-running operations
(get, list, delete, wait). Build a client against it with :meth:`FakeCloudRun.client`::

    ServicesClient(transport="rest", credentials=AnonymousCredentials(),
                   client_options=ClientOptions(api_endpoint=fake.endpoint))  # "http://127.0.0.1:PORT"

Bodies are parsed with the client's own message types, so unknown fields are refused as the
real API refuses them, enums may come as numbers (the client sends ``$alt=json;enum-encoding=int``
and gets numbers back) and absent fields take Cloud Run's defaults (fake_cloudrun_rules.py,
which also holds the validation rules). Mutations answer operations that finish after
``operation_polls`` GetOperation calls; an execution finishes after ``execution_polls`` reads
(GetExecution or GetOperation of its run), and then calls ``on_execution`` for each task.
Every request is kept in ``requests``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import re
import string
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from google.cloud import run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import json_format, timestamp_pb2

from tests.fakes import fake_cloudrun_rules as rules
from tests.fakes.fake_cloudrun_rules import ApiError
from tests.fakes.local_server import LocalServer

logger = logging.getLogger(__name__)

OPERATION_POLLS = 1  # GetOperation calls before a mutation's operation is done (0: done at once)
EXECUTION_POLLS = 1  # reads of an execution (GetExecution, or GetOperation of its run) before it ends
TASK_WAIT_S = 5.0  # how long the read that ends an execution waits for its tasks to run

SERVICE, REVISION, JOB, EXECUTION = (run_v2.Service.pb(), run_v2.Revision.pb(), run_v2.Job.pb(),
                                     run_v2.Execution.pb())
RUN_REQUEST = run_v2.RunJobRequest.pb()
# The fields a caller may set; the rest (uid, conditions, uri...) are output only and ignored.
SERVICE_INPUT = {"description", "labels", "annotations", "client", "clientVersion", "ingress", "launchStage",
                 "binaryAuthorization", "template", "traffic", "scaling", "invokerIamDisabled",
                 "defaultUriDisabled", "iapEnabled", "multiRegionSettings", "customAudiences", "buildConfig"}
JOB_INPUT = {"labels", "annotations", "client", "clientVersion", "launchStage", "binaryAuthorization", "template",
             "startExecutionToken", "runExecutionToken"}
REVISION_FIELDS = {f.json_name for f in REVISION.DESCRIPTOR.fields}
REGION_CODES = {"us-central1": "uc", "us-east1": "ue", "us-east4": "uk", "us-west1": "uw", "europe-west1": "ew",
                "europe-west4": "ez", "asia-northeast1": "an", "asia-southeast1": "as"}
TaskHook = Callable[[dict, dict, int, int], bool]


@dataclass
class RecordedRequest:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]  # last value of each parameter; the client adds "$alt"
    body: Any  # the JSON the client sent (enums as numbers), or None


@dataclass
class _Operation:
    name: str
    message: type  # metadata and response type
    snapshot: dict  # the resource as of now
    polls_left: int
    finish: Callable[[], tuple[dict, tuple[int, str] | None]] | None = None
    execution: str | None = None  # run operations: the execution they wait for
    done: bool = False
    error: tuple[int, str] | None = None


def _now() -> str:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp.ToJsonString()


def _parse(body: bytes, message: type, where: str) -> dict[str, Any]:
    try:
        parsed = json_format.Parse(body.decode() or "{}", message())
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise ApiError(400, "INVALID_ARGUMENT", _payload_error(str(exc), where)) from None
    return json_format.MessageToDict(parsed)


def _payload_error(text: str, where: str) -> str:
    """protobuf's parse error, worded as the API words it ('Unknown name "x" at 'service.template'')."""
    unknown = re.search(r'has no field named "([^"]+)" at "([^"]+)"', text)
    if unknown:
        at = ".".join([where] + [re.sub(r"(?<!^)(?=[A-Z])", "_", p).lower() for p in unknown[2].split(".")[1:]])
        return f"Invalid JSON payload received. Unknown name \"{unknown[1]}\" at '{at}': Cannot find field."
    return f"Invalid JSON payload received at '{where}'. {text.splitlines()[0]}"


def _render(resource: dict[str, Any], message: type, ints: bool) -> dict[str, Any]:
    return json_format.MessageToDict(json_format.ParseDict(resource, message()), use_integers_for_enums=ints)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _suffix(n: int) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=n))


def not_found(kind: str, name: str) -> ApiError:
    parts = name.split("/")
    return ApiError(404, "NOT_FOUND", f"Resource '{parts[-1]}' of kind '{kind}' in region '{parts[3]}' in project "
                    f"'{parts[1]}' does not exist.")


def task_env(execution: dict[str, Any], task_index: int, attempt: int = 0) -> dict[str, str]:
    """The environment Cloud Run gives a task: the container's env plus the CLOUD_RUN_* variables."""
    env = {v["name"]: v.get("value", "") for v in execution["template"]["containers"][0].get("env", [])}
    env.update(CLOUD_RUN_JOB=execution["job"], CLOUD_RUN_EXECUTION=_short(execution["name"]),
               CLOUD_RUN_TASK_INDEX=str(task_index), CLOUD_RUN_TASK_ATTEMPT=str(attempt),
               CLOUD_RUN_TASK_COUNT=str(execution["taskCount"]))
    return env


class FakeCloudRun(LocalServer):
    """The fake server; ``endpoint`` is the ``api_endpoint`` to give the clients."""

    def __init__(self, project: str = "segany-test", region: str = "us-central1") -> None:
        self.project, self.region = project, region
        self.requests: list[RecordedRequest] = []
        self.task_attempts: list[tuple[str, int, int, bool]] = []  # (execution, index, attempt, succeeded)
        self._lock = threading.RLock()
        self._serve(_make_handler(self), "fake-cloudrun")
        self.reset()

    # --- life cycle and test helpers -------------------------------------------------------

    def reset(self) -> None:
        """Forget every resource, operation, policy and request; restore the settings."""
        with self._lock:
            self.requests.clear()
            self.task_attempts.clear()
            self.services: dict[str, dict] = {}
            self.revisions: dict[str, dict] = {}
            self.jobs: dict[str, dict] = {}
            self.executions: dict[str, dict] = {}
            self.operations: dict[str, _Operation] = {}
            self.policies: dict[str, dict] = {}
            self.operation_polls = OPERATION_POLLS
            self.execution_polls = EXECUTION_POLLS
            self.task_wait_s = TASK_WAIT_S
            self.on_execution: TaskHook | None = None
            self._failing_revisions: list[tuple[int, str]] = []
            self._polls: dict[str, int] = {}  # execution name -> reads left
            self._revision_numbers: dict[str, int] = {}  # service name -> revisions created
            self._finishing: set[str] = set()

    def client(self, kind: str) -> Any:
        """A google.cloud.run_v2 client ("services", "revisions", "jobs", "executions") aimed here."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        classes = {"services": run_v2.ServicesClient, "revisions": run_v2.RevisionsClient,
                   "jobs": run_v2.JobsClient, "executions": run_v2.ExecutionsClient}
        return classes[kind](transport="rest", credentials=AnonymousCredentials(),
                             client_options=ClientOptions(api_endpoint=self.endpoint))

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def fail_next_revision(self, message: str = "The user-provided container failed to start and listen on the "
                           "port defined provided by the PORT=8080 environment variable.", code: int = 13) -> None:
        """Make the next revision created fail to become ready: its service operation ends with
        ``code`` (a google.rpc.Code) and the service's terminal condition is failed."""
        with self._lock:
            self._failing_revisions.append((code, message))

    def calls(self, method: str | None = None, path_re: str = "") -> list[RecordedRequest]:
        """The recorded requests with this method whose path matches ``path_re`` (re.search)."""
        return [r for r in list(self.requests)
                if (method is None or r.method == method) and re.search(path_re, r.path)]

    # --- shared pieces ---------------------------------------------------------------------

    def project_number(self, project: str) -> str:
        return str(100000000000 + int(hashlib.sha256(project.encode()).hexdigest(), 16) % 900000000000)

    def _host(self, service: str) -> str:
        parts = service.split("/")
        digest = hashlib.sha256(parts[1].encode()).hexdigest()[:10]
        code = REGION_CODES.get(parts[3], "".join(w[0] for w in parts[3].split("-"))[:2])
        return f"{parts[5]}-{digest}-{code}.a.run.app"

    def _operation(self, parent: str, message: type, snapshot: dict, finish: Callable | None = None,
                   polls: int | None = None, execution: str | None = None) -> _Operation:
        op = _Operation(f"{parent}/operations/{uuid.uuid4()}", message, copy.deepcopy(snapshot),
                        self.operation_polls if polls is None else polls, finish, execution)
        self.operations[op.name] = op
        if op.polls_left <= 0 and execution is None:
            self._finish(op)
        return op

    def _finish(self, op: _Operation) -> None:
        if op.finish is not None:
            resource, op.error = op.finish()
            op.snapshot = copy.deepcopy(resource)
        op.done = True

    def _op_json(self, op: _Operation, ints: bool) -> dict[str, Any]:
        pb = operations_pb2.Operation(name=op.name, done=op.done)
        pb.metadata.Pack(json_format.ParseDict(op.snapshot, op.message()))
        if op.done and op.error:
            pb.error.code, pb.error.message = op.error
        elif op.done:
            pb.response.Pack(json_format.ParseDict(op.snapshot, op.message()))
        return json_format.MessageToDict(pb, use_integers_for_enums=ints)

    def _etag_check(self, sent: str | None, current: dict | None) -> None:
        if sent and current is not None and sent != current["etag"]:
            raise ApiError(409, "ABORTED", f"The etag '{sent}' does not match the current etag of the resource.")

    def _stamp(self, resource: dict, current: dict | None, name: str, changed: bool, modifier: bool = True) -> dict:
        now = _now()
        old = current or {}
        generation = int(old.get("generation", "0")) + (1 if changed or not current else 0)
        resource.update(name=name, uid=old.get("uid", str(uuid.uuid4())), generation=str(generation),
                        createTime=old.get("createTime", now), updateTime=now,
                        creator=old.get("creator", "deployer@example.com"),
                        etag=hashlib.sha256(f"{name}{generation}{now}".encode()).hexdigest()[:24])
        if modifier:
            resource["lastModifier"] = "deployer@example.com"
        return resource

    # --- services and revisions ------------------------------------------------------------

    def apply_service(self, name: str, current: dict | None, sent: dict, validate_only: bool,
                      mask: list[str]) -> _Operation:
        sid = _short(name)
        self._etag_check(sent.get("etag"), current)
        user = {k: v for k, v in sent.items() if k in SERVICE_INPUT}
        if current is not None and mask:
            merged = {k: copy.deepcopy(v) for k, v in current.items() if k in SERVICE_INPUT}
            for path in mask:
                key = path.split(".")[0]
                if key not in SERVICE_INPUT:
                    raise rules.invalid("update_mask", f"Field '{path}' cannot be updated.")
                merged.pop(key, None)
                if key in user:
                    merged[key] = user[key]
            user = merged
        rules.default_ports(user)
        rules.check_service(user, sid)
        desired = rules.default_service(user, self.project_number(name.split("/")[1]))
        template = desired["template"]
        revision = None
        if current is None or template != current["template"]:
            number = self._revision_numbers.get(name, 0) + 1  # numbered like the real ones: SERVICE-00001-abc
            revision = template.get("revision") or f"{sid}-{number:05d}-{_suffix(3)}"
            if f"{name}/revisions/{revision}" in self.revisions:
                raise ApiError(409, "ALREADY_EXISTS", f"Revision named '{revision}' with different configuration "
                               "already exists.")
        known = {_short(r) for r in self._revisions_of(name)} | ({revision} if revision else set())
        rules.check_traffic(desired["traffic"], sid, known)
        changed = current is None or desired != {k: v for k, v in current.items() if k in SERVICE_INPUT}
        service = self._stamp(copy.deepcopy(desired), current, name, changed)
        host = self._host(name)
        project_number = self.project_number(name.split("/")[1])
        latest_created = f"{name}/revisions/{revision}" if revision else (current or {}).get("latestCreatedRevision")
        service.update(uri=f"https://{host}", urls=[f"https://{sid}-{project_number}.{name.split('/')[3]}.run.app",
                                                    f"https://{host}"],
                       latestCreatedRevision=latest_created, reconciling=True,
                       terminalCondition={"type": "Ready", "state": "CONDITION_RECONCILING",
                                          "lastTransitionTime": service["updateTime"]})
        for key in ("latestReadyRevision", "trafficStatuses", "observedGeneration", "conditions"):
            if current is not None and key in current:
                service[key] = copy.deepcopy(current[key])
        parent = name.split("/services/")[0]
        if validate_only:
            return self._operation(parent, SERVICE, service, polls=0)
        failure = None
        if revision:
            self._revision_numbers[name] = self._revision_numbers.get(name, 0) + 1
            failure = self._failing_revisions.pop(0) if self._failing_revisions else None
            self.revisions[latest_created] = self._revision(latest_created, name, desired)
        self.services[name] = service
        uid = service["uid"]
        return self._operation(parent, SERVICE, service,
                               lambda: self._service_ready(name, uid, latest_created if revision else None, failure))

    def _revisions_of(self, service: str) -> list[str]:
        return [r for r in self.revisions if r.startswith(service + "/revisions/")]

    def _revision(self, name: str, service: str, desired: dict) -> dict:
        template = desired["template"]
        revision = {k: copy.deepcopy(v) for k, v in template.items() if k in REVISION_FIELDS and k != "revision"}
        revision.update(service=service, launchStage=desired["launchStage"], reconciling=True, observedGeneration="1",
                        conditions=[{"type": "Ready", "state": "CONDITION_RECONCILING"}],
                        logUri=f"https://console.cloud.google.com/logs/viewer?resource={_short(name)}")
        return self._stamp(revision, None, name, True, modifier=False)

    def _service_ready(self, name: str, uid: str, revision: str | None, failure: tuple[int, str] | None):
        service = self.services.get(name)
        if service is None or service["uid"] != uid:  # deleted (or recreated) meanwhile
            return self.operations_snapshot(name), None
        now = _now()
        error = None
        if revision and revision in self.revisions:
            rev = self.revisions[revision]
            rev["reconciling"] = False
            state = "CONDITION_FAILED" if failure else "CONDITION_SUCCEEDED"
            rev["conditions"] = [{"type": "Ready", "state": state, "lastTransitionTime": now,
                                  **({"message": failure[1]} if failure else {})}]
        if failure:
            error = (failure[0], f"Revision '{_short(revision or '')}' is not ready and cannot serve traffic. "
                     f"{failure[1]}")
        elif revision:
            service["latestReadyRevision"] = revision
        state = "CONDITION_FAILED" if failure else "CONDITION_SUCCEEDED"
        service.update(reconciling=False, observedGeneration=service["generation"],
                       terminalCondition={"type": "Ready", "state": state, "lastTransitionTime": now,
                                          **({"message": error[1]} if error else {})},
                       conditions=[{"type": t, "state": state, "lastTransitionTime": now}
                                   for t in ("RoutesReady", "ConfigurationsReady")])
        if not failure:  # a revision that never gets ready takes no traffic: the routes stay as they were
            # (cloud.google.com/run/docs/rollouts-rollbacks-traffic-migration; the spec keeps what was asked)
            service["trafficStatuses"] = self._traffic_statuses(service)
        return service, error

    def operations_snapshot(self, name: str) -> dict:
        for op in reversed(list(self.operations.values())):
            if op.snapshot.get("name") == name:
                return op.snapshot
        return {"name": name}

    def _traffic_statuses(self, service: dict) -> list[dict]:
        statuses = []
        for target in service["traffic"]:
            status = {k: target[k] for k in ("type", "percent", "tag") if k in target}
            if target.get("revision"):
                status["revision"] = _short(target["revision"])
            if target.get("tag"):
                status["uri"] = f"https://{target['tag']}---{self._host(service['name'])}"
            statuses.append(status)
        return statuses

    # --- jobs and executions ---------------------------------------------------------------

    def apply_job(self, name: str, current: dict | None, sent: dict, validate_only: bool) -> _Operation:
        self._etag_check(sent.get("etag"), current)
        user = {k: v for k, v in sent.items() if k in JOB_INPUT}
        rules.check_job(user)
        desired = rules.default_job(user, self.project_number(name.split("/")[1]))
        changed = current is None or desired != {k: v for k, v in current.items() if k in JOB_INPUT}
        job = self._stamp(copy.deepcopy(desired), current, name, changed)
        for key in ("executionCount", "latestCreatedExecution"):
            if current is not None and key in current:
                job[key] = current[key]
        job.update(reconciling=True, terminalCondition={"type": "Ready", "state": "CONDITION_RECONCILING"})
        parent = name.split("/jobs/")[0]
        if validate_only:
            return self._operation(parent, JOB, job, polls=0)
        self.jobs[name] = job
        uid = job["uid"]

        def ready() -> tuple[dict, None]:
            job_now = self.jobs.get(name)
            if job_now is None or job_now["uid"] != uid:
                return job, None
            job_now.update(reconciling=False, observedGeneration=job_now["generation"],
                           terminalCondition={"type": "Ready", "state": "CONDITION_SUCCEEDED",
                                              "lastTransitionTime": _now()})
            return job_now, None

        return self._operation(parent, JOB, job, ready)

    def run_job(self, name: str, request: dict) -> _Operation:
        job = self.jobs.get(name)
        if job is None:
            raise not_found("JOB", name)
        self._etag_check(request.get("etag"), job)
        template = copy.deepcopy(job["template"])
        overrides = request.get("overrides", {})
        task = template["template"]
        if "taskCount" in overrides:
            rules.check_task_count(overrides["taskCount"], "overrides.task_count")
            template["taskCount"] = overrides["taskCount"]
        if "timeout" in overrides:
            rules.check_task_timeout(overrides["timeout"], "overrides.timeout", bool(task.get("nodeSelector")))
            task["timeout"] = overrides["timeout"]
        for i, override in enumerate(overrides.get("containerOverrides", [])):
            matches = [c for c in task["containers"] if c.get("name", "") == override.get("name", "")]
            if not matches and len(task["containers"]) == 1 and not override.get("name"):
                matches = task["containers"]
            if not matches:
                raise rules.invalid(f"overrides.container_overrides[{i}].name",
                                    f"No container named '{override.get('name', '')}' in job '{_short(name)}'.")
            container = matches[0]
            rules.check_env(override.get("env", []), f"overrides.container_overrides[{i}].env", "job")
            env = {v["name"]: v for v in container.get("env", [])}
            env.update({v["name"]: v for v in override.get("env", [])})  # merged with the job's env
            if env:
                container["env"] = list(env.values())
            if override.get("clearArgs"):
                container.pop("args", None)
            if override.get("args"):
                container["args"] = override["args"]
        execution_id = f"{_short(name)}-{_suffix(5)}"
        execution_name = f"{name}/executions/{execution_id}"
        now = _now()
        execution = {k: copy.deepcopy(template[k]) for k in ("labels", "annotations", "parallelism", "taskCount")
                     if k in template}
        execution.update(job=_short(name), template=task, launchStage=job["launchStage"], reconciling=True,
                         startTime=now, runningCount=execution["taskCount"], observedGeneration="1",
                         conditions=[{"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED"},
                                     {"type": "Started", "state": "CONDITION_SUCCEEDED"},
                                     {"type": "Completed", "state": "CONDITION_RECONCILING"}],
                         logUri=f"https://console.cloud.google.com/logs/viewer?resource={execution_id}")
        execution = self._stamp(execution, None, execution_name, True, modifier=False)
        parent = name.split("/jobs/")[0]
        if request.get("validateOnly"):
            return self._operation(parent, EXECUTION, execution, polls=0)
        self.executions[execution_name] = execution
        self._polls[execution_name] = self.execution_polls
        job["executionCount"] = job.get("executionCount", 0) + 1
        job["latestCreatedExecution"] = {"name": execution_name, "createTime": now,
                                         "completionStatus": "EXECUTION_RUNNING"}
        return self._operation(parent, EXECUTION, execution, execution=execution_name)

    def poll_execution(self, name: str) -> None:
        """Count one read of an execution. The read that ends it runs its tasks on a worker thread
        and waits up to ``task_wait_s`` for them (the client's GetOperation times out after 10 s);
        slower tasks leave the execution running and a later read finds it done."""
        with self._lock:
            execution = self.executions.get(name)
            if execution is None or "completionTime" in execution or name in self._finishing:
                return
            self._polls[name] = self._polls.get(name, 0) - 1
            if self._polls[name] > 0:
                return
            self._finishing.add(name)
            job = copy.deepcopy(self.jobs.get(name.split("/executions/")[0], {}))
            worker = threading.Thread(target=self._run_tasks, args=(name, job, copy.deepcopy(execution),
                                                                    self.on_execution),
                                      name=f"fake-cloudrun-{_short(name)}", daemon=True)
            worker.start()
        worker.join(timeout=self.task_wait_s)

    def _run_tasks(self, name: str, job: dict, execution: dict, hook: TaskHook | None) -> None:
        succeeded = failed = retried = 0
        try:
            for index in range(execution["taskCount"]):
                ok, attempts = True, execution["template"].get("maxRetries", rules.DEFAULT_MAX_RETRIES) + 1
                for attempt in range(attempts):
                    ok = True
                    if hook is not None:
                        try:
                            ok = bool(hook(job, execution, index, execution["taskCount"]))
                        except Exception:  # a task that raises is a failed attempt
                            logger.exception("fake_cloudrun: task %d of %s raised", index, name)
                            ok = False
                    self.task_attempts.append((name, index, attempt, ok))
                    if ok:
                        break
                    retried += attempt + 1 < attempts  # a failed attempt with retries left is retried
                succeeded, failed = succeeded + ok, failed + (not ok)
        finally:
            with self._lock:
                self._finishing.discard(name)
                self._complete(name, succeeded, failed, retried)

    def _complete(self, name: str, succeeded: int, failed: int, retried: int, cancelled: int = 0) -> None:
        execution = self.executions.get(name)
        if execution is None or "completionTime" in execution:
            return
        now = _now()
        state = "CONDITION_FAILED" if failed or cancelled else "CONDITION_SUCCEEDED"
        message = (f"Execution {_short(name)} has failed to complete, {succeeded}/{execution['taskCount']} tasks "
                   "were a success." if failed else "Execution was cancelled." if cancelled else
                   "Execution completed successfully.")
        execution.pop("runningCount", None)
        execution.update(reconciling=False, completionTime=now, updateTime=now,
                         conditions=execution["conditions"][:2] + [{"type": "Completed", "state": state,
                                                                    "message": message, "lastTransitionTime": now}])
        for key, value in (("succeededCount", succeeded), ("failedCount", failed), ("retriedCount", retried),
                           ("cancelledCount", cancelled)):
            if value:
                execution[key] = value
        job = self.jobs.get(name.split("/executions/")[0])
        if job and job.get("latestCreatedExecution", {}).get("name") == name:
            status = "EXECUTION_CANCELLED" if cancelled else "EXECUTION_FAILED" if failed else "EXECUTION_SUCCEEDED"
            job["latestCreatedExecution"].update(completionTime=now, completionStatus=status)
        for op in self.operations.values():
            if op.execution == name and not op.done:
                op.snapshot, op.done = copy.deepcopy(execution), True
                op.error = (9, message) if failed or cancelled else None

    # --- IAM -------------------------------------------------------------------------------

    def get_policy(self, resource: str) -> dict:
        return self.policies.get(resource, {"etag": "ACAB"})

    def set_policy(self, resource: str, body: bytes) -> dict:
        request = json_format.Parse(body.decode() or "{}", iam_policy_pb2.SetIamPolicyRequest())
        current = self.get_policy(resource)
        sent = json_format.MessageToDict(request.policy)
        if sent.get("etag") and sent["etag"] != current["etag"]:
            raise ApiError(409, "ABORTED", "There were concurrent policy changes. Please retry the whole "
                           "read-modify-write with exponential backoff.")
        for binding in sent.get("bindings", []):
            if not binding.get("role", "").startswith(("roles/", "projects/", "organizations/")):
                raise rules.invalid("policy.bindings.role", f"Role '{binding.get('role', '')}' is not valid.")
            for member in binding.get("members", []):
                if member not in ("allUsers", "allAuthenticatedUsers") and not re.match(
                        r"^(user|serviceAccount|group|domain|principal|principalSet|deleted:\w+):.+", member):
                    raise rules.invalid("policy.bindings.members", f"Invalid member '{member}'.")
        policy = json_format.MessageToDict(policy_pb2.Policy(version=request.policy.version or 1,
                                                             bindings=request.policy.bindings,
                                                             etag=uuid.uuid4().bytes[:8]))
        self.policies[resource] = policy
        return policy


def _make_handler(fake: FakeCloudRun) -> type[BaseHTTPRequestHandler]:
    from tests.fakes.fake_cloudrun_routes import dispatch

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("fake_cloudrun: " + format, *args)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            with fake._lock:
                fake.requests.append(RecordedRequest(self.command, path, query, body))
            try:
                status, answer = dispatch(fake, self.command, path, query, raw)
            except ApiError as error:
                status, answer = error.http, error.body()
            except Exception as exc:  # a bug in the fake: answer 500 and log it
                logger.exception("fake_cloudrun: %s %s failed", self.command, path)
                status, answer = 500, ApiError(500, "INTERNAL", f"fake_cloudrun: {exc!r}").body()
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815 - http.server's naming

    return Handler
