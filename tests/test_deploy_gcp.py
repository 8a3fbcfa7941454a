"""``segany deploy/invoke/status/destroy gcp`` against the fake Cloud Run Admin API v2
(tests/fakes/fake_cloudrun.py), driven through the real google-cloud-run client (REST, anonymous
credentials, ``SEGANY_CLOUD_RUN_ENDPOINT``), with the requests asserted field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy.cli import main

IMAGE = "us-central1-docker.pkg.dev/segany-test/segment-anywhere/segment-anywhere:cpu-tiny"
IMAGE_2 = IMAGE + "-2"
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "images"


def segany(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def run(fake_cloudrun, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SEGANY_CLOUD_RUN_ENDPOINT", fake_cloudrun.endpoint)
    return fake_cloudrun


def deploy(run, *extra: str, image: str = IMAGE) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    return segany("deploy", "gcp", "--project", run.project, "--region", run.region, "--service", "sam",
                  "--image", image, "--model", "tiny", *extra)


def mutations(run) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(r.method, r.path.rsplit("/", 1)[-1]) for r in run.requests if r.method in ("POST", "PATCH", "DELETE")]


def service(run) -> dict:  # type: ignore[no-untyped-def]
    return run.services[f"{run.parent}/services/sam"]


def shares_of(run) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Each revision's share of the traffic as routed (trafficStatuses; a revision may have a
    share entry and a tag entry)."""
    shares: dict[str, int] = {}
    for entry in service(run).get("trafficStatuses", []):
        shares[entry["revision"]] = shares.get(entry["revision"], 0) + entry.get("percent", 0)
    return shares


def test_create_rerun_update_no_traffic_rollback_status_destroy(run):
    code, out = deploy(run, "--invoker", "user:me@example.com", "--max-instances", "4")
    assert code == 0, out
    (create,) = run.calls("POST", r"/services$")
    assert create.query.get("serviceId") in ("sam", ["sam"])
    template = create.body["template"]
    release = template["revision"].removeprefix("sam-")
    assert len(release) == 10 and template["labels"]["segany-release"] == release
    assert template["scaling"] == {"maxInstanceCount": 4}  # min 0: proto3 leaves it out, Cloud Run's default is 0
    assert template["maxInstanceRequestConcurrency"] == 2 and template["timeout"] == "900s" and template["sessionAffinity"]
    (container,) = template["containers"]
    assert container["image"] == IMAGE and {"name": "SEGANY_MODEL", "value": "tiny"} in container["env"]
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}, "cpuIdle": True, "startupCpuBoost": True}
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz" and container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert create.body["traffic"] == [{"type": 2, "revision": f"sam-{release}", "percent": 100, "tag": f"r-{release}"}]
    (policy,) = run.calls("POST", r":setIamPolicy$")
    assert policy.body["policy"]["bindings"] == [{"role": "roles/run.invoker", "members": ["user:me@example.com"]}]
    assert "segany invoke gcp" in out and "per instance-hour" in out and "scaled to zero" in out

    run.requests.clear()
    code, out = deploy(run, "--invoker", "user:me@example.com", "--max-instances", "4")
    assert code == 0 and mutations(run) == [] and "unchanged" in out

    code, out = deploy(run, "--invoker", "user:me@example.com", "--max-instances", "4", image=IMAGE_2)
    assert code == 0, out
    second = service(run)["template"]["revision"]
    assert second != f"sam-{release}"
    traffic = service(run)["traffic"]
    assert {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": second, "percent": 100,
            "tag": "r-" + second.removeprefix("sam-")} in traffic
    assert any(t.get("tag") == f"r-{release}" and not t.get("percent") for t in traffic)  # the old tag URL stays

    code, out = deploy(run, "--invoker", "user:me@example.com", "--max-instances", "4", "--no-traffic",
                       "--env", "SEGANY_CACHE_MB=64")
    assert code == 0, out
    third = service(run)["template"]["revision"]
    shares = shares_of(run)
    assert shares[second] == 100 and shares[third] == 0  # behind its tag URL only

    code, out = segany("status", "gcp", "--project", run.project, "--region", run.region, "--service", "sam")
    assert code == 0, out
    assert f"{second}  100%" in out and f"{third}    0%  tag r-{third.removeprefix('sam-')}" in out
    assert "user:me@example.com" in out

    code, out = segany("deploy", "gcp", "--rollback", "--project", run.project, "--region", run.region, "--service", "sam")
    assert code == 0, out
    shares = shares_of(run)
    assert shares[f"sam-{release}"] == 100 and shares[second] == 0 and shares[third] == 0

    run.requests.clear()
    code, out = segany("destroy", "gcp", "--project", run.project, "--region", run.region, "--service", "sam", "--dry-run")
    assert code == 0 and "services.delete_service" in out and mutations(run) == []
    code, out = segany("destroy", "gcp", "--project", run.project, "--region", run.region, "--service", "sam")
    assert code == 0 and f"{run.parent}/services/sam" not in run.services


def test_a_revision_that_never_gets_ready_leaves_the_traffic_where_it_was(run):
    assert deploy(run)[0] == 0
    first = service(run)["template"]["revision"]
    run.fail_next_revision()
    code, out = deploy(run, image=IMAGE_2)
    assert code == 2 and "the traffic stays where it was" in out
    assert {revision: share for revision, share in shares_of(run).items() if share} == {first: 100}
    code, out = segany("status", "gcp", "--project", run.project, "--region", run.region, "--service", "sam")
    assert code == 0 and "last deploy failed" in out and f"{first}  100%" in out
    code, out = deploy(run, image=IMAGE_2)  # the same release again: its revision name is spent
    assert code == 2 and "never got ready" in out


def test_public_only_when_asked_and_a_service_not_ours_is_left_alone(run):
    code, out = deploy(run, "--allow-unauthenticated")
    assert code == 0, out
    (policy,) = run.calls("POST", r":setIamPolicy$")
    assert policy.body["policy"]["bindings"] == [{"role": "roles/run.invoker", "members": ["allUsers"]}]
    theirs = run.client("services")
    theirs.create_service(parent=run.parent, service_id="theirs",
                          service={"template": {"containers": [{"image": IMAGE}]}}).result()
    code, out = segany("deploy", "gcp", "--project", run.project, "--region", run.region, "--service", "theirs",
                       "--image", IMAGE, "--model", "tiny")
    assert code == 2 and "not made by segany" in out
    code, out = segany("destroy", "gcp", "--project", run.project, "--region", run.region, "--service", "theirs")
    assert code == 0 and "left alone" in out and f"{run.parent}/services/theirs" in run.services


def test_gpu_service_spec(run):
    code, out = deploy(run, "--gpu", "nvidia-l4", "--no-gpu-zonal-redundancy", image=IMAGE.replace("cpu", "cuda"))
    assert code == 0, out
    template = run.calls("POST", r"/services$")[0].body["template"]
    assert template["nodeSelector"] == {"accelerator": "nvidia-l4"} and template["gpuZonalRedundancyDisabled"] is True
    resources = template["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"} and "cpuIdle" not in resources
    assert template["maxInstanceRequestConcurrency"] == 4


def test_job_runs_its_tasks_with_their_index(run, monkeypatch):
    seen = []
    run.on_execution = lambda job, execution, index, count: seen.append((index, count)) or True
    code, out = deploy(run, "--job", "--input", "gs://photos/in", "--output", "gs://photos/out", "--tasks", "3",
                       "--task", "everything")
    assert code == 0, out
    (create,) = run.calls("POST", r"/jobs$")
    task = create.body["template"]["template"]
    assert create.body["template"]["taskCount"] == 3 and task["containers"][0]["command"] == ["segany"]
    assert task["containers"][0]["args"] == ["batch", "gs://photos/in", "gs://photos/out", "--task", "everything", "--model", "tiny"]
    assert sorted(seen) == [(0, 3), (1, 3), (2, 3)]
    assert "3 task(s) succeeded, 0 failed" in out


def test_invoke_gcp_against_the_service_process(server, predictor_for):
    """The invoke's request, as the real server (the image's service, tiny model) answers it:
    masks equal SamPredictor's."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from tests.test_segment import assert_masks_match, reference

    code, out = segany("invoke", "gcp", str(PHOTOS / "truck.jpg"), "--url", server.url, "--no-auth",
                       "--points", "[[500, 375]]", "--output", "rle")
    assert code == 0, out
    answer = json.loads(out)
    full_logits, _scores, _low_res = reference(predictor_for("truck"), {"points": [[500, 375]], "labels": [1]}, True)
    ours = np.stack([mask_utils.decode(m["segmentation"]) for m in answer["results"][0]["masks"]]).astype(bool)
    assert_masks_match(ours, full_logits)


def test_the_artifact_registry_repository_is_created_only_when_asked(run, monkeypatch, tmp_path):
    from google.auth.credentials import AnonymousCredentials

    from deploy.gcp.artifact_registry import ArtifactRegistry
    from tests.fakes.fake_artifact_registry import FakeArtifactRegistry
    from tests.test_deploy_aws import oci_archive

    registry = FakeArtifactRegistry().start()
    try:
        monkeypatch.setenv("SEGANY_ARTIFACT_REGISTRY_ENDPOINT", registry.endpoint)
        archive = oci_archive(tmp_path / "image.tar", {"io.segment-anywhere.device": "cpu", "io.segment-anywhere.model": "tiny",
                                                        "io.segment-anywhere.weights": "converted"})
        where = ("deploy", "gcp", "--project", run.project, "--region", run.region, "--service", "sam", "--oci-archive", str(archive))
        code, out = segany(*where)
        assert code == 2 and "--create-repository" in out and "gcloud artifacts repositories create" in out
        assert mutations(run) == []  # stopped before anything was pushed or deployed
        code, out = segany(*where, "--create-repository", "--dry-run")
        assert code == 0 and "artifactregistry.create_repository" in out and '"format": "DOCKER"' in out
        assert not registry.repositories
        name = f"{run.parent}/repositories/segment-anywhere"
        made = ArtifactRegistry(AnonymousCredentials()).create_repository(
            run.parent, "segment-anywhere", {"format": "DOCKER", "labels": {"segany-app": "segment-anywhere"}})
        assert made["name"] == name and ArtifactRegistry(AnonymousCredentials()).exists(name)
    finally:
        registry.stop()


def test_send_reuses_the_image_id_and_passes_the_service_errors_on(server):
    """deploy.gcp.invoke.send (what segany compare and segany ui forward through): the image once,
    then prompts by image_id; the service's own 4xx comes back as its status and body."""
    from deploy.gcp.invoke import send

    first = send(server.url, {"task": "segment", "points": [[500, 375]], "labels": [1], "output": "rle"},
                 (PHOTOS / "truck.jpg").read_bytes(), authenticate=False)
    image_id = json.loads(first[1])["image_id"]
    again = send(server.url, {"task": "segment", "image_id": image_id, "points": [[100, 100]], "labels": [1],
                              "output": "rle"}, None, authenticate=False)
    missing = send(server.url, {"task": "segment", "image_id": "0" * 64, "points": [[1, 1]], "labels": [1]}, None,
                   authenticate=False)
    assert first[0] == again[0] == 200 and json.loads(again[1])["image_id"] == image_id
    assert json.loads(again[1])["results"][0]["masks"] != json.loads(first[1])["results"][0]["masks"]
    assert missing[0] == 404 and json.loads(missing[1])["error"]["code"] == "image_not_found"
