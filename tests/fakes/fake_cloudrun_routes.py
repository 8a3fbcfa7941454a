"""The REST routes of the fake Cloud Run Admin API v2 (see fake_cloudrun.py).

The paths and query parameters are those of the generated REST transports of google-cloud-run
(``run_v2/services/*/transports/rest_base.py``); a query parameter a route does not know is
refused, as the real API refuses it.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any, Callable

from google.protobuf import json_format

from tests.fakes import fake_cloudrun_rules as rules
from tests.fakes.fake_cloudrun import (EXECUTION, JOB, RUN_REQUEST, REVISION, SERVICE, FakeCloudRun, _parse, _render,
                                       _short, not_found)
from tests.fakes.fake_cloudrun_rules import ApiError

_LOC = r"/v2/(?P<parent>projects/[^/:]+/locations/[^/:]+)"
_ID = r"[^/:]+"
_PAGE = {"pageSize", "pageToken", "showDeleted"}
Answer = tuple[int, dict[str, Any]]
_ROUTES: list[tuple[str, re.Pattern, Callable, set[str]]] = []


def _route(method: str, pattern: str, allowed: set[str] = frozenset()) -> Callable:
    def register(handler: Callable) -> Callable:
        _ROUTES.append((method, re.compile(f"^{_LOC}{pattern}$"), handler, set(allowed)))
        return handler
    return register


def dispatch(fake: FakeCloudRun, method: str, path: str, query: dict[str, str], raw: bytes) -> Answer:
    for verb, pattern, handler, allowed in _ROUTES:
        match = pattern.match(path)
        if match is None or verb != method:
            continue
        unknown = set(query) - allowed - {"$alt"}
        if unknown:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. Unknown name "
                           f"\"{sorted(unknown)[0]}\": Cannot bind query parameter.")
        ints = "enum-encoding=int" in query.get("$alt", "")
        try:
            return handler(fake, match.groupdict(), query, raw, ints)
        except json_format.ParseError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from None
    raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server ({method}).")


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "false").lower() == "true"


def _page(items: list[dict], query: dict[str, str], key: str, message: type, ints: bool) -> Answer:
    start = int(query.get("pageToken") or 0)
    size = int(query.get("pageSize") or 0) or len(items) or 1
    answer: dict[str, Any] = {key: [_render(i, message, ints) for i in items[start:start + size]]}
    if start + size < len(items):
        answer["nextPageToken"] = str(start + size)
    return 200, answer


def _stored(fake: FakeCloudRun, store: dict, kind: str, name: str, message: type, ints: bool) -> Answer:
    """A Get: the stored resource, or NOT_FOUND as the API words it."""
    with fake._lock:
        if name not in store:
            raise not_found(kind, name)
        return 200, _render(store[name], message, ints)


def _op(fake: FakeCloudRun, op: Any, ints: bool) -> Answer:
    return 200, fake._op_json(op, ints)


# --- services ----------------------------------------------------------------------------------


@_route("POST", "/services", {"serviceId", "validateOnly"})
def create_service(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    sent = _parse(raw, SERVICE, "service")
    rules.check_id(q.get("serviceId", ""), "service")
    name = f"{g['parent']}/services/{q['serviceId']}"
    with fake._lock:
        if name in fake.services:
            raise ApiError(409, "ALREADY_EXISTS", f"Resource '{q['serviceId']}' already exists.")
        return _op(fake, fake.apply_service(name, None, sent, _flag(q, "validateOnly"), []), ints)


@_route("GET", "/services", _PAGE)
def list_services(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        items = [s for n, s in fake.services.items() if n.startswith(g["parent"] + "/services/")]
        return _page(items, q, "services", SERVICE, ints)


@_route("GET", f"/services/(?P<id>{_ID})")
def get_service(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    return _stored(fake, fake.services, "SERVICE", f"{g['parent']}/services/{g['id']}", SERVICE, ints)


@_route("PATCH", f"/services/(?P<id>{_ID})", {"updateMask", "validateOnly", "allowMissing"})
def update_service(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    name = f"{g['parent']}/services/{g['id']}"
    sent = _parse(raw, SERVICE, "service")
    mask = [p for p in q.get("updateMask", "").split(",") if p]
    with fake._lock:
        current = fake.services.get(name)
        if current is None and not _flag(q, "allowMissing"):
            raise not_found("SERVICE", name)
        if current is None:
            rules.check_id(g["id"], "service")
        return _op(fake, fake.apply_service(name, current, sent, _flag(q, "validateOnly"), mask), ints)


@_route("DELETE", f"/services/(?P<id>{_ID})", {"validateOnly", "etag"})
def delete_service(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    name = f"{g['parent']}/services/{g['id']}"
    with fake._lock:
        service = fake.services.get(name)
        if service is None:
            raise not_found("SERVICE", name)
        fake._etag_check(q.get("etag"), service)
        if not _flag(q, "validateOnly"):
            del fake.services[name]
            fake.policies.pop(name, None)
            fake._revision_numbers.pop(name, None)
            for revision in fake._revisions_of(name):
                del fake.revisions[revision]
        return _op(fake, fake._operation(g["parent"], SERVICE, service), ints)


@_route("GET", f"/services/(?P<id>{_ID})/revisions", _PAGE)
def list_revisions(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    service = f"{g['parent']}/services/{g['id']}"
    with fake._lock:
        if service not in fake.services:
            raise not_found("SERVICE", service)
        items = sorted((fake.revisions[r] for r in fake._revisions_of(service)), key=lambda r: r["createTime"],
                       reverse=True)
        return _page(items, q, "revisions", REVISION, ints)


@_route("GET", f"/services/(?P<id>{_ID})/revisions/(?P<rev>{_ID})")
def get_revision(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    return _stored(fake, fake.revisions, "REVISION", f"{g['parent']}/services/{g['id']}/revisions/{g['rev']}", REVISION, ints)


@_route("DELETE", f"/services/(?P<id>{_ID})/revisions/(?P<rev>{_ID})", {"validateOnly", "etag"})
def delete_revision(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    service_name = f"{g['parent']}/services/{g['id']}"
    name = f"{service_name}/revisions/{g['rev']}"
    with fake._lock:
        revision = fake.revisions.get(name)
        if revision is None:
            raise not_found("REVISION", name)
        fake._etag_check(q.get("etag"), revision)
        service = fake.services[service_name]
        serving = {s.get("revision") for s in service.get("trafficStatuses", []) if s.get("percent")}
        if any(s.get("percent") and "revision" not in s for s in service.get("trafficStatuses", [])):
            serving.add(_short(service.get("latestReadyRevision", "")))
        targeted = {_short(t.get("revision", "")) for t in service["traffic"]}
        if g["rev"] in serving | targeted:
            raise ApiError(400, "FAILED_PRECONDITION", f"Revision '{g['rev']}' is referenced by the traffic of "
                           f"service '{g['id']}' and cannot be deleted.")
        if not _flag(q, "validateOnly"):
            del fake.revisions[name]
        return _op(fake, fake._operation(g["parent"], REVISION, revision), ints)


# --- IAM (services and jobs) -----------------------------------------------------------------


def _iam_resource(fake: FakeCloudRun, g: dict) -> str:
    name = f"{g['parent']}/{g['coll']}/{g['id']}"
    if name not in (fake.services if g["coll"] == "services" else fake.jobs):
        raise not_found(g["coll"][:-1].upper(), name)
    return name


@_route("GET", f"/(?P<coll>services|jobs)/(?P<id>{_ID}):getIamPolicy", {"options.requestedPolicyVersion"})
def get_iam_policy(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        return 200, copy.deepcopy(fake.get_policy(_iam_resource(fake, g)))


@_route("POST", f"/(?P<coll>services|jobs)/(?P<id>{_ID}):setIamPolicy")
def set_iam_policy(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        return 200, copy.deepcopy(fake.set_policy(_iam_resource(fake, g), raw))


@_route("POST", f"/(?P<coll>services|jobs)/(?P<id>{_ID}):testIamPermissions")
def check_iam_permissions(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        _iam_resource(fake, g)
    permissions = json.loads(raw or b"{}").get("permissions", [])
    return 200, ({"permissions": permissions} if permissions else {})


# --- jobs and executions -----------------------------------------------------------------------


@_route("POST", "/jobs", {"jobId", "validateOnly"})
def create_job(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    sent = _parse(raw, JOB, "job")
    rules.check_id(q.get("jobId", ""), "job")
    name = f"{g['parent']}/jobs/{q['jobId']}"
    with fake._lock:
        if name in fake.jobs:
            raise ApiError(409, "ALREADY_EXISTS", f"Resource '{q['jobId']}' already exists.")
        return _op(fake, fake.apply_job(name, None, sent, _flag(q, "validateOnly")), ints)


@_route("GET", "/jobs", _PAGE)
def list_jobs(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        return _page([j for n, j in fake.jobs.items() if n.startswith(g["parent"] + "/jobs/")], q, "jobs", JOB, ints)


@_route("GET", f"/jobs/(?P<id>{_ID})")
def get_job(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    return _stored(fake, fake.jobs, "JOB", f"{g['parent']}/jobs/{g['id']}", JOB, ints)


@_route("PATCH", f"/jobs/(?P<id>{_ID})", {"validateOnly", "allowMissing"})
def update_job(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    name = f"{g['parent']}/jobs/{g['id']}"
    sent = _parse(raw, JOB, "job")
    with fake._lock:
        current = fake.jobs.get(name)
        if current is None and not _flag(q, "allowMissing"):
            raise not_found("JOB", name)
        if current is None:
            rules.check_id(g["id"], "job")
        return _op(fake, fake.apply_job(name, current, sent, _flag(q, "validateOnly")), ints)


@_route("DELETE", f"/jobs/(?P<id>{_ID})", {"validateOnly", "etag"})
def delete_job(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    name = f"{g['parent']}/jobs/{g['id']}"
    with fake._lock:
        job = fake.jobs.get(name)
        if job is None:
            raise not_found("JOB", name)
        fake._etag_check(q.get("etag"), job)
        if not _flag(q, "validateOnly"):
            del fake.jobs[name]
            fake.policies.pop(name, None)
            for execution in [e for e in fake.executions if e.startswith(name + "/executions/")]:
                _stop(fake, execution)
                del fake.executions[execution]
        return _op(fake, fake._operation(g["parent"], JOB, job), ints)


@_route("POST", f"/jobs/(?P<id>{_ID}):run")
def run_job(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    request = _parse(raw, RUN_REQUEST, "*")
    with fake._lock:
        return _op(fake, fake.run_job(f"{g['parent']}/jobs/{g['id']}", request), ints)


@_route("GET", f"/jobs/(?P<id>{_ID})/executions", _PAGE)
def list_executions(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    job = f"{g['parent']}/jobs/{g['id']}"
    with fake._lock:
        if job not in fake.jobs:
            raise not_found("JOB", job)
        items = [e for n, e in fake.executions.items() if n.startswith(job + "/executions/")]
        return _page(sorted(items, key=lambda e: e["createTime"], reverse=True), q, "executions", EXECUTION, ints)


def _execution(fake: FakeCloudRun, g: dict) -> str:
    name = f"{g['parent']}/jobs/{g['id']}/executions/{g['ex']}"
    if name not in fake.executions:
        raise not_found("EXECUTION", name)
    return name


@_route("GET", f"/jobs/(?P<id>{_ID})/executions/(?P<ex>{_ID})")
def get_execution(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        name = _execution(fake, g)
    fake.poll_execution(name)
    with fake._lock:
        return 200, _render(fake.executions[_execution(fake, g)], EXECUTION, ints)


@_route("DELETE", f"/jobs/(?P<id>{_ID})/executions/(?P<ex>{_ID})", {"validateOnly", "etag"})
def delete_execution(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        name = _execution(fake, g)
        execution = fake.executions[name]
        fake._etag_check(q.get("etag"), execution)
        if not _flag(q, "validateOnly"):
            _stop(fake, name)
            del fake.executions[name]
        return _op(fake, fake._operation(g["parent"], EXECUTION, execution), ints)


def _stop(fake: FakeCloudRun, name: str) -> None:
    """Cancel an execution that has not ended (so the operations waiting on it end too)."""
    execution = fake.executions[name]
    if "completionTime" not in execution and name not in fake._finishing:
        fake._complete(name, 0, 0, 0, cancelled=execution["taskCount"])


@_route("POST", f"/jobs/(?P<id>{_ID})/executions/(?P<ex>{_ID}):cancel")
def cancel_execution(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        name = _execution(fake, g)
        _stop(fake, name)
        return _op(fake, fake._operation(g["parent"], EXECUTION, fake.executions[name]), ints)


# --- operations --------------------------------------------------------------------------------


def _operation(fake: FakeCloudRun, g: dict) -> Any:
    name = f"{g['parent']}/operations/{g['op']}"
    if name not in fake.operations:
        raise not_found("OPERATION", name)
    return fake.operations[name]


@_route("GET", f"/operations/(?P<op>{_ID})")
def get_operation(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool, wait: bool = False) -> Answer:
    with fake._lock:
        op = _operation(fake, g)
        if op.execution is None and not op.done:
            op.polls_left = 0 if wait else op.polls_left - 1
            if op.polls_left <= 0:
                fake._finish(op)
    if op.execution is not None and not op.done:
        while True:  # a wait reads the execution until it ends
            fake.poll_execution(op.execution)
            with fake._lock:
                if not wait or op.done or op.execution not in fake.executions:
                    break
            time.sleep(0.01)
    with fake._lock:
        return _op(fake, op, ints)


@_route("POST", f"/operations/(?P<op>{_ID}):wait")
def wait_operation(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    return get_operation(fake, g, q, raw, ints, wait=True)


@_route("GET", "/operations", {"filter", "pageSize", "pageToken"})
def list_operations(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        ops = [fake._op_json(o, ints) for n, o in fake.operations.items() if n.startswith(g["parent"] + "/")]
    return 200, {"operations": ops} if ops else {}


@_route("DELETE", f"/operations/(?P<op>{_ID})")
def delete_operation(fake: FakeCloudRun, g: dict, q: dict, raw: bytes, ints: bool) -> Answer:
    with fake._lock:
        del fake.operations[_operation(fake, g).name]
    return 200, {}
