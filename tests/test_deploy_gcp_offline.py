"""``segany deploy gcp`` before any call: settings checked against Cloud Run's documented limits,
the dry run and the Knative YAML offline (no credentials: planned as if nothing existed)."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from deploy.cli import main

IMAGE = "us-central1-docker.pkg.dev/proj/segment-anywhere/segment-anywhere:cpu-vit_h"


def segany(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def offline(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    """No Application Default Credentials and no Cloud Run endpoint override."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.delenv("SEGANY_CLOUD_RUN_ENDPOINT", raising=False)
    monkeypatch.setattr("google.auth._default._get_gce_credentials", lambda *a, **k: (None, None))


def gcp(*extra: str) -> tuple[int, str]:
    return segany("deploy", "gcp", "--project", "proj", "--region", "us-central1", "--image", IMAGE, "--model", "vit_h", *extra)


@pytest.mark.parametrize("args, message", [
    (("--memory", "12Gi", "--cpu", "2"), "needs at least 4 vCPU"),
    (("--memory", "40Gi", "--cpu", "8"), "at most 32Gi"),
    (("--cpu", "3"), "one of 1, 2, 4, 6, 8"),
    (("--memory", "2Gi"), "too small for vit_h"),
    (("--gpu", "nvidia-l4", "--cpu", "4", "--memory", "8Gi"), "needs at least 4 vCPU and 16Gi"),
    (("--timeout-s", "3601"), "1-3600"),
    (("--concurrency", "1001"), "1-1000"),
    (("--min-instances", "4", "--max-instances", "2"), "0 <= min <= max"),
    (("--service", "Bad_Name"), "lowercase letters"),
    (("--invoker", "me@example.com"), "IAM members are user:EMAIL"),
    (("--job",), "--job needs --input"),
    (("--job", "--input", "gs://bkt/in", "--output", "gs://bkt/out", "--tasks", "10001"), "--tasks 10001"),
    (("--job", "--input", "gs://bkt/in", "--output", "gs://bkt/out", "--max-retries", "11"), "--max-retries 11"),
])
def test_bad_settings_fail_before_any_call(offline, args, message):
    code, out = gcp(*args)
    assert code == 2 and message in out, out


def test_dry_run_offline_plans_a_private_scale_to_zero_service(offline):
    code, out = gcp("--dry-run", "--invoker", "user:me@example.com")
    assert code == 0, out
    assert "no Google Cloud credentials were found: planned as if nothing existed yet" in out
    assert "services.create_service" in out and "services.set_iam_policy" in out
    assert '"min_instance_count": 0' in out and '"max_instance_request_concurrency": 2' in out
    assert '"cpu": "4"' in out and '"memory": "6Gi"' in out and '"path": "/readyz"' in out and '"path": "/livez"' in out
    assert '"session_affinity": true' in out and '"members": [\n' in out and "user:me@example.com" in out
    assert "allUsers" not in out


def test_emit_yaml_is_a_knative_service(offline, tmp_path):
    path = tmp_path / "service.yaml"
    code, out = gcp("--emit-yaml", str(path), "--max-instances", "5", "--gpu", "nvidia-l4",
                    "--image", IMAGE.replace("cpu", "cuda"))
    assert code == 0, out
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "serving.knative.dev/v1" and doc["kind"] == "Service"
    template = doc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "0" and annotations["autoscaling.knative.dev/maxScale"] == "5"
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"  # a GPU: CPU always allocated
    pod = template["spec"]
    assert pod["containerConcurrency"] == 4 and pod["nodeSelector"] == {"run.googleapis.com/accelerator": "nvidia-l4"}
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert pod["containers"][0]["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert doc["spec"]["traffic"] == [{"revisionName": template["metadata"]["name"], "percent": 100,
                                       "tag": "r-" + template["metadata"]["name"].rsplit("-", 1)[1]}]


def test_allow_unauthenticated_is_public_only_when_asked(offline):
    code, out = gcp("--dry-run", "--allow-unauthenticated")
    assert code == 0 and '"allUsers"' in out and "anyone who finds its URL" in out
    code, out = gcp("--dry-run")
    assert code == 0 and "set_iam_policy" not in out  # private: no invoker binding at all
