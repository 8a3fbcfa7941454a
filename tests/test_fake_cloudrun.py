"""The fake Cloud Run Admin API v2 (tests/fakes/fake_cloudrun.py), driven by the real
google-cloud-run clients over REST: what it accepts, what it answers, what it refuses."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

run_v2 = pytest.importorskip("google.cloud.run_v2")

from google.api_core import exceptions  # noqa: E402
from google.api_core.future import polling  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.iam.v1 import policy_pb2  # noqa: E402
from google.protobuf import duration_pb2, field_mask_pb2  # noqa: E402

from tests.fakes.fake_cloudrun import task_env  # noqa: E402

IMAGE = "us-central1-docker.pkg.dev/segany-test/segany/segment-anywhere:1"
FAST = polling.DEFAULT_POLLING.with_delay(initial=0.01, maximum=0.05).with_timeout(10)  # for op.result()
LATEST, REVISION = (run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                    run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION)


def container(**kwargs: Any) -> run_v2.Container:
    kwargs.setdefault("image", IMAGE)
    return run_v2.Container(**kwargs)


def service(limits: dict[str, str] | None = None, cpu_idle: bool = False, **template: Any) -> run_v2.Service:
    resources = run_v2.ResourceRequirements(limits=limits, cpu_idle=cpu_idle) if limits else None
    c = template.pop("container") if "container" in template else container(resources=resources)
    return run_v2.Service(template=run_v2.RevisionTemplate(containers=[c], **template))


def create(fake, svc: run_v2.Service | None = None, service_id: str = "segany") -> run_v2.Service:
    return fake.client("services").create_service(parent=fake.parent, service=svc or service(),
                                                  service_id=service_id).result(polling=FAST)


def raw(fake, method: str, path: str, body: Any = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(fake.endpoint + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- clients and services --------------------------------------------------------------------


def test_client_takes_an_http_api_endpoint(fake_cloudrun):
    client = run_v2.ServicesClient(transport="rest", credentials=AnonymousCredentials(),
                                   client_options=ClientOptions(api_endpoint=fake_cloudrun.endpoint))
    assert client._transport._host == fake_cloudrun.endpoint.rstrip("/")  # kept http://, no TLS
    assert client._transport.operations_client._transport._host == fake_cloudrun.endpoint
    assert list(client.list_services(parent=fake_cloudrun.parent)) == []


def test_create_waits_on_operation_then_get_shows_defaults(fake_cloudrun):
    client = fake_cloudrun.client("services")
    op = client.create_service(parent=fake_cloudrun.parent, service=service({"cpu": "2", "memory": "4Gi"}),
                               service_id="segany")
    assert op.operation.name.startswith(f"{fake_cloudrun.parent}/operations/")
    created = op.result(polling=FAST)
    assert isinstance(op.metadata, run_v2.Service)
    got = client.get_service(name=f"{fake_cloudrun.parent}/services/segany")
    assert got == created
    assert got.uri.startswith("https://segany-") and got.uri.endswith("-uc.a.run.app")
    assert got.uri in got.urls and got.uid and got.etag and got.generation == 1 and got.observed_generation == 1
    assert got.create_time and got.update_time and not got.reconciling
    assert got.terminal_condition.type_ == "Ready"
    assert got.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert {c.type_ for c in got.conditions} == {"RoutesReady", "ConfigurationsReady"}
    assert got.latest_created_revision == got.latest_ready_revision
    assert got.latest_ready_revision.startswith(f"{got.name}/revisions/segany-00001-")
    assert [(t.type_, t.percent) for t in got.traffic_statuses] == [(LATEST, 100)]
    # Cloud Run's defaults, filled in for the fields proto3 left out of the request
    template = got.template
    assert template.scaling.max_instance_count == 100 and template.scaling.min_instance_count == 0
    assert template.max_instance_request_concurrency == 80 and template.timeout.total_seconds() == 300
    assert template.containers[0].ports[0].container_port == 8080 and template.containers[0].ports[0].name == "http1"
    assert template.containers[0].startup_probe.tcp_socket.port == 8080
    assert template.service_account.endswith("-compute@developer.gserviceaccount.com")
    assert got.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    # what the client sent, field by field: proto3 JSON, defaults omitted, enums as numbers
    post = fake_cloudrun.calls("POST", r"/services$")[0]
    assert post.query == {"serviceId": "segany", "$alt": "json;enum-encoding=int"}
    assert post.body == {"template": {"containers": [{"image": IMAGE,
                                                       "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}}]}}
    assert fake_cloudrun.calls("GET", "/operations/")  # op.result() polled GetOperation


def test_operation_polls_and_reconciling(fake_cloudrun):
    fake_cloudrun.operation_polls = 3
    client = fake_cloudrun.client("services")
    op = client.create_service(parent=fake_cloudrun.parent, service=service(), service_id="segany")
    during = client.get_service(name=f"{fake_cloudrun.parent}/services/segany")
    assert during.reconciling and not during.latest_ready_revision
    assert during.terminal_condition.state == run_v2.Condition.State.CONDITION_RECONCILING
    op.result(polling=FAST)
    assert len(fake_cloudrun.calls("GET", "/operations/")) == 3
    assert client.get_service(name=during.name).latest_ready_revision == during.latest_created_revision
    # WaitOperation ends an operation at once
    fake_cloudrun.operation_polls = 50
    op = client.delete_service(name=during.name)
    waited = client.wait_operation(request={"name": op.operation.name})
    assert waited.done and not fake_cloudrun.services


def test_update_creates_a_second_revision_and_only_when_the_template_changes(fake_cloudrun):
    client = fake_cloudrun.client("services")
    first = create(fake_cloudrun)
    changed = client.get_service(name=first.name)  # read, modify, write back (with etag and outputs)
    changed.template.containers[0].image = IMAGE.replace(":1", ":2")
    second = client.update_service(service=changed).result(polling=FAST)
    assert second.generation == 2 and second.latest_ready_revision != first.latest_ready_revision
    assert "-00002-" in second.latest_ready_revision
    revisions = list(fake_cloudrun.client("revisions").list_revisions(parent=first.name))
    assert sorted(r.name for r in revisions) == sorted([first.latest_ready_revision, second.latest_ready_revision])
    newest = fake_cloudrun.client("revisions").get_revision(name=second.latest_ready_revision)
    assert newest.containers[0].image.endswith(":2") and newest.service == first.name
    assert newest.scaling.max_instance_count == 100 and newest.max_instance_request_concurrency == 80
    # the same template again (a GET written back, or labels only) makes no revision
    again = client.update_service(service=client.get_service(name=first.name)).result(polling=FAST)
    assert again.latest_created_revision == second.latest_created_revision and again.generation == 2
    labelled = run_v2.Service(name=first.name, labels={"team": "vision"})
    client.update_service(request={"service": labelled, "update_mask": field_mask_pb2.FieldMask(paths=["labels"])}
                          ).result(polling=FAST)
    after = client.get_service(name=first.name)
    assert after.labels == {"team": "vision"} and after.latest_created_revision == second.latest_created_revision
    assert fake_cloudrun.calls("PATCH")[-1].query["updateMask"] == "labels"
    # a named revision; a stale etag is refused
    named = client.get_service(name=first.name)
    named.template.revision = "segany-v3"
    named.template.max_instance_request_concurrency = 4
    assert client.update_service(service=named).result(polling=FAST).latest_ready_revision.endswith("/segany-v3")
    with pytest.raises(exceptions.Conflict, match="etag"):
        client.update_service(service=changed)
    # allow_missing creates; without it, updating a missing service is a 404
    with pytest.raises(exceptions.NotFound):
        client.update_service(service=run_v2.Service(name=f"{fake_cloudrun.parent}/services/ghost",
                                                     template=service().template))
    made = client.update_service(request={"service": run_v2.Service(name=f"{fake_cloudrun.parent}/services/ghost",
                                                                    template=service().template),
                                          "allow_missing": True}).result(polling=FAST)
    assert made.latest_ready_revision.startswith(f"{made.name}/revisions/ghost-00001-")


def test_traffic_split_with_tags_and_tag_urls(fake_cloudrun):
    client = fake_cloudrun.client("services")
    first = create(fake_cloudrun)
    old = first.latest_ready_revision.rsplit("/", 1)[-1]
    svc = client.get_service(name=first.name)
    svc.template.revision = "segany-canary"
    svc.template.containers[0].image = IMAGE.replace(":1", ":2")
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=old, percent=90, tag="stable"),
                   run_v2.TrafficTarget(type_=REVISION, revision="segany-canary", percent=10, tag="canary"),
                   run_v2.TrafficTarget(type_=LATEST, tag="latest")]
    done = client.update_service(service=svc).result(polling=FAST)
    host = done.uri.removeprefix("https://")
    statuses = [(s.type_, s.revision, s.percent, s.tag, s.uri) for s in done.traffic_statuses]
    assert statuses == [(REVISION, old, 90, "stable", f"https://stable---{host}"),
                        (REVISION, "segany-canary", 10, "canary", f"https://canary---{host}"),
                        (LATEST, "", 0, "latest", f"https://latest---{host}")]
    sent = fake_cloudrun.calls("PATCH")[-1].body["traffic"]
    assert sent[0] == {"type": 2, "revision": old, "percent": 90, "tag": "stable"}  # enums travel as numbers
    assert sent[2] == {"type": 1, "tag": "latest"}  # percent 0 is not sent at all
    bad = [([run_v2.TrafficTarget(type_=LATEST, percent=50)], "sum to 50"),
           ([run_v2.TrafficTarget(type_=REVISION, revision="segany-nope", percent=100)], "not found"),
           ([run_v2.TrafficTarget(type_=LATEST, percent=100, tag="a"),
             run_v2.TrafficTarget(type_=REVISION, revision=old, tag="a")], "Duplicate tag"),
           ([run_v2.TrafficTarget(type_=LATEST, percent=100, tag="Bad_Tag")], "Invalid tag"),
           ([run_v2.TrafficTarget(revision=old, percent=100)], "type must be specified")]
    for traffic, message in bad:
        svc = client.get_service(name=first.name)
        svc.traffic = traffic
        with pytest.raises(exceptions.BadRequest, match=message):
            client.update_service(service=svc)


def test_validate_only_creates_nothing(fake_cloudrun):
    client = fake_cloudrun.client("services")
    op = client.create_service(request={"parent": fake_cloudrun.parent, "service": service(),
                                        "service_id": "segany", "validate_only": True})
    would_be = op.result(polling=FAST)
    assert would_be.name.endswith("/services/segany") and would_be.template.timeout.total_seconds() == 300
    assert fake_cloudrun.calls("POST")[0].query["validateOnly"] == "true"
    assert not fake_cloudrun.services and not fake_cloudrun.revisions
    with pytest.raises(exceptions.NotFound):
        client.get_service(name=would_be.name)
    with pytest.raises(exceptions.BadRequest):  # but it still validates
        client.create_service(request={"parent": fake_cloudrun.parent, "service": service({"cpu": "9"}),
                                       "service_id": "segany", "validate_only": True})


def test_iam_policies_on_services_and_jobs(fake_cloudrun):
    svc = create(fake_cloudrun)
    client = fake_cloudrun.client("services")
    empty = client.get_iam_policy(request={"resource": svc.name})
    assert not empty.bindings and empty.etag
    policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker", members=["allUsers"])],
                               etag=empty.etag)
    saved = client.set_iam_policy(request={"resource": svc.name, "policy": policy})
    assert saved.etag != empty.etag
    got = client.get_iam_policy(request={"resource": svc.name})
    assert [(b.role, list(b.members)) for b in got.bindings] == [("roles/run.invoker", ["allUsers"])]
    with pytest.raises(exceptions.Conflict, match="concurrent policy changes"):
        client.set_iam_policy(request={"resource": svc.name, "policy": policy})  # the old etag
    bad = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker", members=["someone"])])
    with pytest.raises(exceptions.BadRequest, match="Invalid member"):
        client.set_iam_policy(request={"resource": svc.name, "policy": bad})
    with pytest.raises(exceptions.NotFound):
        client.get_iam_policy(request={"resource": f"{fake_cloudrun.parent}/services/ghost"})
    allowed = client.test_iam_permissions(request={"resource": svc.name, "permissions": ["run.routes.invoke"]})
    assert list(allowed.permissions) == ["run.routes.invoke"]
    job = create_job(fake_cloudrun)
    jobs = fake_cloudrun.client("jobs")
    jobs.set_iam_policy(request={"resource": job.name, "policy": policy_pb2.Policy(bindings=[policy_pb2.Binding(
        role="roles/run.invoker", members=["serviceAccount:sched@segany-test.iam.gserviceaccount.com"])])})
    assert jobs.get_iam_policy(request={"resource": job.name}).bindings[0].members[0].startswith("serviceAccount:")


# --- validation --------------------------------------------------------------------------------

probe = run_v2.Probe
GPU_TEMPLATE = dict(node_selector=run_v2.NodeSelector(accelerator="nvidia-l4"))
RULES = [
    ("memory over 4Gi needs 2 cpu", service({"cpu": "1", "memory": "5Gi"}), "requires at least 2 CPU"),
    ("memory over 8Gi needs 4 cpu", service({"cpu": "2", "memory": "16Gi"}), "requires at least 4 CPU"),
    ("memory over 16Gi needs 6 cpu", service({"cpu": "4", "memory": "20Gi"}), "requires at least 6 CPU"),
    ("memory over 24Gi needs 8 cpu", service({"cpu": "6", "memory": "30Gi"}), "requires at least 8 CPU"),
    ("at most 32Gi", service({"cpu": "8", "memory": "33Gi"}), "maximum is 32Gi"),
    ("at most 8 cpu", service({"cpu": "16", "memory": "32Gi"}), "Supported values are 1, 2, 4, 6 or 8"),
    ("no 3 cpu", service({"cpu": "3", "memory": "4Gi"}), "Supported values"),
    ("4 cpu need 2Gi", service({"cpu": "4", "memory": "1Gi"}), "at least 2Gi"),
    ("under 1 cpu needs concurrency 1", service({"cpu": "500m", "memory": "512Mi"}, cpu_idle=True,
                                               max_instance_request_concurrency=80), "concurrency > 1"),
    ("under 1 cpu needs request-based billing", service({"cpu": "500m", "memory": "512Mi"}), "cpu_idle = true"),
    ("unknown resource", service({"cpu": "1", "ephemeral-storage": "1Gi"}), "Unsupported resource"),
    ("request timeout at most 3600s", service(timeout=duration_pb2.Duration(seconds=3601)), "between 1s and 3600s"),
    ("concurrency at most 1000", service(max_instance_request_concurrency=1001), "between 1 and 1000"),
    ("min instances <= max", service(scaling=run_v2.RevisionScaling(min_instance_count=5, max_instance_count=2)),
     "must not be greater than max_instance_count"),
    ("gpu needs 4 cpu 16Gi", service({"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}, **GPU_TEMPLATE),
     "minimum of 4 CPU and 16Gi"),
    ("gpu needs the accelerator", service({"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}),
     "node_selector.accelerator"),
    ("gpu needs cpu always allocated", service({"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                                               cpu_idle=True, **GPU_TEMPLATE), "cpu_idle must be false"),
    ("one gpu only", service({"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}, **GPU_TEMPLATE),
     "only supported value is '1'"),
    ("l4 only", service({"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                        node_selector=run_v2.NodeSelector(accelerator="nvidia-a100")), "nvidia-l4"),
    ("node selector needs a gpu", service({"cpu": "4", "memory": "16Gi"}, **GPU_TEMPLATE), "needs a container"),
    ("startup period at most 240", service(container=container(startup_probe=probe(
        period_seconds=300, http_get=run_v2.HTTPGetAction(path="/readyz")))),
     "period_seconds must be between 1 and 240"),
    ("probe timeout <= period", service(container=container(startup_probe=probe(
        period_seconds=5, timeout_seconds=6, http_get=run_v2.HTTPGetAction(path="/readyz")))), "timeout_seconds"),
    ("probe path absolute", service(container=container(startup_probe=probe(
        http_get=run_v2.HTTPGetAction(path="readyz")))), "must be absolute"),
    ("probe needs an action", service(container=container(startup_probe=probe(period_seconds=5))), "Exactly one of"),
    ("no tcp liveness", service(container=container(liveness_probe=probe(tcp_socket=run_v2.TCPSocketAction()))),
     "Liveness probes support httpGet and grpc only"),
    ("revision prefix", service(revision="other-v1"), "must be prefixed by the name of the enclosing Service"),
    ("reserved env", service(container=container(env=[run_v2.EnvVar(name="PORT", value="9000")])), "reserved"),
    ("reserved label namespace", run_v2.Service(labels={"run.googleapis.com/x": "y"}, template=service().template),
     "namespace reserved"),
    ("two ports", service(container=container(ports=[run_v2.ContainerPort(container_port=1),
                                                     run_v2.ContainerPort(container_port=2)])), "single port"),
    ("an image", service(container=run_v2.Container()), "image is required"),
]


@pytest.mark.parametrize("svc, message", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_service_rules_refuse_with_400(fake_cloudrun, svc, message):
    with pytest.raises(exceptions.BadRequest, match=message) as refused:
        fake_cloudrun.client("services").create_service(parent=fake_cloudrun.parent, service=svc,
                                                        service_id="segany")
    assert refused.value.code == 400 and "cloud.google.com/run/docs" in refused.value.message
    assert refused.value.details[0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert not fake_cloudrun.services


@pytest.mark.parametrize("service_id", ["Segany", "1segany", "segany-", "s" * 50, "seg_any"])
def test_service_ids_are_checked(fake_cloudrun, service_id):
    with pytest.raises(exceptions.BadRequest, match="Invalid service id"):
        create(fake_cloudrun, service_id=service_id)


def test_accepted_edge_cases_gpu_probe_and_limits(fake_cloudrun):
    gpu = service({"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}, **GPU_TEMPLATE,
                  scaling=run_v2.RevisionScaling(min_instance_count=0, max_instance_count=3),
                  max_instance_request_concurrency=4, timeout=duration_pb2.Duration(seconds=3600))
    gpu.template.containers[0].startup_probe = probe(http_get=run_v2.HTTPGetAction(path="/readyz"),
                                                     period_seconds=240, timeout_seconds=240, failure_threshold=10)
    made = create(fake_cloudrun, gpu, service_id="s" * 49)
    startup = made.template.containers[0].startup_probe
    assert startup.http_get.path == "/readyz" and startup.http_get.port == 8080 and startup.failure_threshold == 10
    assert not made.template.containers[0].resources.cpu_idle  # omitted by the client: CPU always allocated
    body = fake_cloudrun.calls("POST")[0].body["template"]
    assert body["scaling"] == {"maxInstanceCount": 3}  # min 0 is omitted by proto3
    assert "cpuIdle" not in body["containers"][0]["resources"]
    assert create(fake_cloudrun, service({"cpu": "8", "memory": "32Gi"}), service_id="big").template.containers
    small = create(fake_cloudrun, service({"cpu": "0.5", "memory": "512Mi"}, cpu_idle=True), service_id="small")
    assert small.template.max_instance_request_concurrency == 1  # the default under 1 CPU


def test_unknown_fields_and_query_parameters_are_refused(fake_cloudrun):
    path = f"/v2/{fake_cloudrun.parent}/services"
    status, body = raw(fake_cloudrun, "POST", f"{path}?serviceId=x", {"template": {"containerz": []}})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["message"] == ("Invalid JSON payload received. Unknown name \"containerz\" at "
                                        "'service.template': Cannot find field.")
    status, body = raw(fake_cloudrun, "GET", f"{path}?bogus=1")
    assert status == 400 and "bogus" in body["error"]["message"]
    create(fake_cloudrun)
    status, body = raw(fake_cloudrun, "GET", f"{path}/segany")  # no $alt: enums as names
    assert status == 200 and body["ingress"] == "INGRESS_TRAFFIC_ALL" and body["launchStage"] == "GA"
    assert body["template"]["timeout"] == "300s" and body["generation"] == "1"


# --- jobs and executions -----------------------------------------------------------------------


def create_job(fake, job_id: str = "segany-batch", task_count: int = 3, max_retries: int = 0, **task: Any):
    template = run_v2.TaskTemplate(containers=[container(env=[run_v2.EnvVar(name="SEGANY_MODE", value="batch")])],
                                   max_retries=max_retries, **task)
    job = run_v2.Job(template=run_v2.ExecutionTemplate(task_count=task_count, template=template))
    return fake.client("jobs").create_job(parent=fake.parent, job=job, job_id=job_id).result(polling=FAST)


def test_job_run_with_overrides_runs_each_task_through_the_hook(fake_cloudrun):
    job = create_job(fake_cloudrun)
    assert job.template.task_count == 3 and job.template.template.max_retries == 0
    assert job.template.template.timeout.total_seconds() == 600
    assert fake_cloudrun.calls("POST", "/jobs$")[0].body["template"]["template"]["maxRetries"] == 0  # a oneof: sent
    calls = []

    def hook(job_spec, execution, task_index, task_count):
        calls.append((task_index, task_count, task_env(execution, task_index), job_spec["name"]))
        return True

    fake_cloudrun.on_execution = hook
    jobs = fake_cloudrun.client("jobs")
    overrides = run_v2.RunJobRequest.Overrides(
        task_count=4, timeout=duration_pb2.Duration(seconds=120),
        container_overrides=[run_v2.RunJobRequest.Overrides.ContainerOverride(
            args=["--shard"], env=[run_v2.EnvVar(name="SEGANY_INPUT", value="gs://in/")])])
    op = jobs.run_job(request={"name": job.name, "overrides": overrides})
    assert op.metadata.task_count == 4 and not calls  # nothing ran yet
    execution = op.result(polling=FAST)
    assert [(c[0], c[1]) for c in calls] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    env = calls[2][2]
    assert env["CLOUD_RUN_TASK_INDEX"] == "2" and env["CLOUD_RUN_TASK_COUNT"] == "4"
    assert env["SEGANY_MODE"] == "batch" and env["SEGANY_INPUT"] == "gs://in/"
    assert env["CLOUD_RUN_EXECUTION"] == execution.name.rsplit("/", 1)[-1] and calls[0][3] == job.name
    assert execution.name.startswith(f"{job.name}/executions/segany-batch-")
    assert execution.succeeded_count == 4 and execution.failed_count == 0 and execution.completion_time
    assert execution.template.timeout.total_seconds() == 120 and list(execution.template.containers[0].args) == [
        "--shard"]
    assert fake_cloudrun.calls("POST", ":run$")[0].body["overrides"]["taskCount"] == 4
    executions = fake_cloudrun.client("executions")
    assert executions.get_execution(name=execution.name).succeeded_count == 4
    assert [e.name for e in executions.list_executions(parent=job.name)] == [execution.name]
    latest = jobs.get_job(name=job.name)
    assert latest.execution_count == 1 and latest.latest_created_execution.completion_status == \
        run_v2.ExecutionReference.CompletionStatus.EXECUTION_SUCCEEDED


def test_failed_tasks_are_retried_then_fail_the_execution(fake_cloudrun):
    job = create_job(fake_cloudrun, task_count=2, max_retries=1)
    fake_cloudrun.on_execution = lambda job_spec, execution, index, count: index == 0
    op = fake_cloudrun.client("jobs").run_job(name=job.name)
    with pytest.raises(exceptions.FailedPrecondition, match="1/2 tasks were a success"):
        op.result(polling=FAST)
    name = op.metadata.name
    assert [(i, a, ok) for n, i, a, ok in fake_cloudrun.task_attempts] == [(0, 0, True), (1, 0, False), (1, 1, False)]
    execution = fake_cloudrun.client("executions").get_execution(name=name)
    assert (execution.succeeded_count, execution.failed_count, execution.retried_count) == (1, 1, 1)


def test_slow_tasks_leave_the_execution_running_until_they_end(fake_cloudrun):
    job = create_job(fake_cloudrun, task_count=2)
    fake_cloudrun.task_wait_s = 0.05
    release = threading.Event()
    fake_cloudrun.on_execution = lambda *_: release.wait(10)
    op = fake_cloudrun.client("jobs").run_job(name=job.name)
    executions = fake_cloudrun.client("executions")
    assert not op.done() and executions.get_execution(name=op.metadata.name).running_count == 2
    release.set()
    assert op.result(polling=FAST).succeeded_count == 2


def test_execution_ends_after_polls_of_get_execution(fake_cloudrun):
    job = create_job(fake_cloudrun, task_count=1)
    fake_cloudrun.execution_polls = 2
    op = fake_cloudrun.client("jobs").run_job(name=job.name)
    executions = fake_cloudrun.client("executions")
    assert executions.get_execution(name=op.metadata.name).running_count == 1
    assert executions.get_execution(name=op.metadata.name).succeeded_count == 1
    assert op.result(polling=FAST).succeeded_count == 1
    # cancel a running one
    fake_cloudrun.execution_polls = 10
    running = fake_cloudrun.client("jobs").run_job(name=job.name).metadata.name
    cancelled = executions.cancel_execution(name=running).result(polling=FAST)
    assert cancelled.cancelled_count == 1 and executions.delete_execution(name=running).result(polling=FAST)
    with pytest.raises(exceptions.NotFound):
        executions.get_execution(name=running)
    # deleting a running execution ends the run operation waiting on it
    run = fake_cloudrun.client("jobs").run_job(name=job.name)
    executions.delete_execution(name=run.metadata.name).result(polling=FAST)
    with pytest.raises(exceptions.FailedPrecondition, match="cancelled"):
        run.result(polling=FAST)


JOB_RULES = [
    (dict(task_count=10001), "between 1 and 10000"),
    (dict(max_retries=11), "between 0 and 10"),
    (dict(timeout=duration_pb2.Duration(seconds=168 * 3600 + 1)), "168 hours"),
    (dict(timeout=duration_pb2.Duration(seconds=7200), node_selector=run_v2.NodeSelector(accelerator="nvidia-l4")),
     "for tasks using GPUs"),
]


@pytest.mark.parametrize("kwargs, message", JOB_RULES, ids=["task-count", "max-retries", "timeout", "gpu-timeout"])
def test_job_rules_refuse_with_400(fake_cloudrun, kwargs, message):
    with pytest.raises(exceptions.BadRequest, match=message):
        create_job(fake_cloudrun, **kwargs)
    assert not fake_cloudrun.jobs


def test_job_overrides_and_env_are_checked(fake_cloudrun):
    job = create_job(fake_cloudrun)
    jobs = fake_cloudrun.client("jobs")
    with pytest.raises(exceptions.BadRequest, match="between 1 and 10000"):
        jobs.run_job(request={"name": job.name, "overrides": {"task_count": 20000}})
    with pytest.raises(exceptions.BadRequest, match="reserved"):
        jobs.run_job(request={"name": job.name, "overrides": {"container_overrides": [
            {"env": [{"name": "CLOUD_RUN_TASK_INDEX", "value": "0"}]}]}})
    with pytest.raises(exceptions.BadRequest, match="No container named"):
        jobs.run_job(request={"name": job.name, "overrides": {"container_overrides": [{"name": "nope"}]}})
    assert not fake_cloudrun.executions


# --- delete, 404, 409 --------------------------------------------------------------------------


def test_delete_not_found_and_already_exists(fake_cloudrun):
    client = fake_cloudrun.client("services")
    first = create(fake_cloudrun)
    with pytest.raises(exceptions.Conflict, match="already exists") as exists:
        create(fake_cloudrun)
    assert exists.value.code == 409
    with pytest.raises(exceptions.NotFound, match="Resource 'ghost' of kind 'SERVICE'"):
        client.get_service(name=f"{fake_cloudrun.parent}/services/ghost")
    # a revision serving traffic cannot go; an unused one can
    svc = client.get_service(name=first.name)
    svc.template.containers[0].image = IMAGE.replace(":1", ":2")
    second = client.update_service(service=svc).result(polling=FAST)
    revisions = fake_cloudrun.client("revisions")
    with pytest.raises(exceptions.BadRequest, match="cannot be deleted"):
        revisions.delete_revision(name=second.latest_ready_revision)
    assert revisions.delete_revision(name=first.latest_ready_revision).result(polling=FAST).name == \
        first.latest_ready_revision
    with pytest.raises(exceptions.NotFound):
        revisions.get_revision(name=first.latest_ready_revision)
    svc = client.get_service(name=first.name)
    svc.template.containers[0].image = IMAGE.replace(":1", ":3")
    assert "-00003-" in client.update_service(service=svc).result(polling=FAST).latest_ready_revision
    deleted = client.delete_service(name=first.name).result(polling=FAST)
    assert deleted.name == first.name and not fake_cloudrun.revisions
    with pytest.raises(exceptions.NotFound):
        client.get_service(name=first.name)
    with pytest.raises(exceptions.NotFound):
        client.delete_service(name=first.name)
    job = create_job(fake_cloudrun)
    with pytest.raises(exceptions.Conflict):
        create_job(fake_cloudrun)
    fake_cloudrun.client("jobs").delete_job(name=job.name).result(polling=FAST)
    with pytest.raises(exceptions.NotFound, match="of kind 'JOB'"):
        fake_cloudrun.client("jobs").run_job(name=job.name)


def test_failed_revision_and_listing_pages(fake_cloudrun):
    first = create(fake_cloudrun)
    client = fake_cloudrun.client("services")
    fake_cloudrun.fail_next_revision("Image not found.")
    svc = client.get_service(name=first.name)
    svc.template.containers[0].image = IMAGE.replace(":1", ":broken")
    with pytest.raises(exceptions.InternalServerError, match="is not ready and cannot serve traffic"):
        client.update_service(service=svc).result(polling=FAST)
    after = client.get_service(name=first.name)
    assert after.latest_ready_revision == first.latest_ready_revision != after.latest_created_revision
    assert after.terminal_condition.state == run_v2.Condition.State.CONDITION_FAILED
    for name in ("b", "c"):
        create(fake_cloudrun, service_id=name)
    pages = client.list_services(request={"parent": fake_cloudrun.parent, "page_size": 1})
    assert [s.name.rsplit("/", 1)[-1] for s in pages] == ["segany", "b", "c"]
    assert len(fake_cloudrun.calls("GET", r"/services$")) == 3
