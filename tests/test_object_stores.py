"""s3:// and gs:// reads against moto and the fake GCS: image_url reads and checkpoint downloads."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from deploy.aws import s3
from deploy.gcp import gcs
from runners.errors import CheckpointError, DependencyMissing, PayloadTooLarge, URLFetchFailed
from runners.urlfetch import UrlPolicy, fetch_url
from tests.cloud_fakes import MotoS3
from tests.fakes.fake_gcs import FakeGCS

DATA = bytes(range(256)) * 64  # 16 KiB
BIG = bytes(range(251)) * 12_000  # ~3 MB, not a multiple of any chunk size


class Recorder:
    """A Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.starts: list[int | None] = []
        self.advances: list[int] = []

    def start(self, total_bytes: int | None) -> None:
        self.starts.append(total_bytes)

    def advance(self, n_bytes: int) -> None:
        assert self.starts, "advance() before start()"
        self.advances.append(n_bytes)


STORES: dict[str, ModuleType] = {"s3": s3, "gs": gcs}


@pytest.fixture(params=["s3", "gs"])
def store(request: pytest.FixtureRequest) -> tuple[str, ModuleType, MotoS3 | FakeGCS]:
    """(scheme, module, fake with put(bucket, key, data)) for each object store."""
    scheme = request.param
    fake = request.getfixturevalue("moto_s3" if scheme == "s3" else "fake_gcs")
    return scheme, STORES[scheme], fake


@pytest.mark.parametrize("module, scheme", [(s3, "s3"), (gcs, "gs")])
def test_parse_uri(module: ModuleType, scheme: str) -> None:
    assert module.parse_uri(f"{scheme}://bucket/a/b/c.pth") == ("bucket", "a/b/c.pth")
    for bad in (f"{scheme}://bucket", f"{scheme}://bucket/", f"{scheme}:///key", "https://bucket/key", "bucket/key"):
        with pytest.raises(ValueError):
            module.parse_uri(bad)


def test_read_object(store: tuple[str, ModuleType, MotoS3 | FakeGCS]) -> None:
    scheme, module, fake = store
    fake.put("images", "cats/cat 1.png", DATA)
    assert module.read_object(f"{scheme}://images/cats/cat 1.png", max_bytes=1 << 20, timeout_s=10) == DATA
    policy = UrlPolicy(schemes=(scheme,), allow_hosts=(), timeout_s=10, max_bytes=1 << 20)
    assert fetch_url(f"{scheme}://images/cats/cat 1.png", policy) == DATA


def test_read_object_exactly_at_the_cap_and_over_it(store: tuple[str, ModuleType, MotoS3 | FakeGCS]) -> None:
    scheme, module, fake = store
    fake.put("images", "big.png", DATA)
    assert module.read_object(f"{scheme}://images/big.png", max_bytes=len(DATA), timeout_s=10) == DATA
    with pytest.raises(PayloadTooLarge) as info:
        module.read_object(f"{scheme}://images/big.png", max_bytes=len(DATA) - 1, timeout_s=10)
    assert info.value.field == "image_url" and "SEGANY_MAX_BODY_MB" in info.value.message


def test_empty_object(store: tuple[str, ModuleType, MotoS3 | FakeGCS]) -> None:
    scheme, module, fake = store
    fake.put("images", "empty", b"")
    assert module.read_object(f"{scheme}://images/empty", max_bytes=100, timeout_s=10) == b""


@pytest.mark.parametrize("uri_tail", ["images/missing.png", "no-such-bucket/key.png"])
def test_read_missing_object(store: tuple[str, ModuleType, MotoS3 | FakeGCS], uri_tail: str) -> None:
    scheme, module, fake = store
    fake.put("images", "present.png", DATA)
    uri = f"{scheme}://{uri_tail}"
    with pytest.raises(URLFetchFailed) as info:
        module.read_object(uri, max_bytes=1 << 20, timeout_s=10)
    assert info.value.field == "image_url"
    assert uri in info.value.message and "does not exist" in info.value.message


def test_read_object_bad_uri(store: tuple[str, ModuleType, MotoS3 | FakeGCS]) -> None:
    scheme, module, _fake = store
    with pytest.raises(URLFetchFailed, match="bucket and"):
        module.read_object(f"{scheme}://only-bucket", max_bytes=10, timeout_s=1)


def test_download_object_with_progress(store: tuple[str, ModuleType, MotoS3 | FakeGCS], tmp_path: Path) -> None:
    scheme, module, fake = store
    fake.put("models", "sam/vit_b.pth", BIG)
    dest = tmp_path / "vit_b.pth.part"
    progress = Recorder()
    module.download_object(f"{scheme}://models/sam/vit_b.pth", dest, progress=progress)
    assert dest.read_bytes() == BIG
    assert progress.starts == [len(BIG)]
    assert sum(progress.advances) == len(BIG) and len(progress.advances) >= 2
    module.download_object(f"{scheme}://models/sam/vit_b.pth", tmp_path / "again")  # progress is optional
    assert (tmp_path / "again").read_bytes() == BIG


def test_download_missing_object(store: tuple[str, ModuleType, MotoS3 | FakeGCS], tmp_path: Path) -> None:
    scheme, module, fake = store
    fake.put("models", "other.pth", DATA)
    uri = f"{scheme}://models/sam/missing.pth"
    with pytest.raises(CheckpointError) as info:
        module.download_object(uri, tmp_path / "x", progress=Recorder())
    assert uri in info.value.message and "SEGANY_MODEL=tiny" in info.value.message


def test_gcs_download_verifies_the_checksum(fake_gcs: FakeGCS, tmp_path: Path) -> None:
    fake_gcs.put("models", "sam.pth", BIG)
    fake_gcs.buckets["models"]["sam.pth"].crc32c_b64 = "AAAAAA=="
    fake_gcs.buckets["models"]["sam.pth"].md5_b64 = "AAAAAAAAAAAAAAAAAAAAAA=="
    with pytest.raises(CheckpointError, match="gs://models/sam.pth"):
        gcs.download_object("gs://models/sam.pth", tmp_path / "sam.pth")


def test_gcs_works_without_credentials(fake_gcs: FakeGCS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "does-not-exist.json"))
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    fake_gcs.put("images", "a.png", DATA)
    assert gcs.read_object("gs://images/a.png", max_bytes=1 << 20, timeout_s=10) == DATA
    assert any(path.startswith("/storage/v1/b/images/o/a.png") for _m, path, _h in fake_gcs.requests)


def test_s3_uses_aws_endpoint_url(moto_s3: MotoS3) -> None:
    moto_s3.put("images", "a.png", DATA)
    client = s3._client(connect_timeout=5, read_timeout=5, attempts=1)
    assert client.meta.endpoint_url == moto_s3.endpoint
    assert client.meta.region_name == "us-east-1"


@pytest.mark.parametrize(
    "module, hidden, extra",
    [(s3, "boto3", "[aws]"), (gcs, "google.cloud.storage", "[gcp]")],
)
def test_missing_sdk(
    module: ModuleType, hidden: str, extra: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)  # makes `import hidden` raise ImportError
    if hidden.startswith("google."):
        monkeypatch.delattr(sys.modules["google.cloud"], "storage", raising=False)
    scheme = "s3" if module is s3 else "gs"
    with pytest.raises(DependencyMissing) as info:
        module.read_object(f"{scheme}://b/k", max_bytes=10, timeout_s=1)
    assert info.value.status == 501 and f"segment-anywhere{extra}" in info.value.message
    with pytest.raises(DependencyMissing):
        module.download_object(f"{scheme}://b/k", tmp_path / "k")


def test_gcs_size_is_checked_before_downloading(fake_gcs: FakeGCS) -> None:
    fake_gcs.put("images", "big.png", DATA)
    with pytest.raises(PayloadTooLarge):
        gcs.read_object("gs://images/big.png", max_bytes=100, timeout_s=10)
    paths = [path for _m, path, _h in fake_gcs.requests]
    assert any("/o/big.png" in p for p in paths)
    assert not any("alt=media" in p for p in paths)  # only metadata was read


def test_fake_gcs_serves_ranges(fake_gcs: FakeGCS) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    fake_gcs.put("images", "a.bin", DATA)
    client = storage.Client(project="segany-test", credentials=AnonymousCredentials())
    blob = client.bucket("images").blob("a.bin")
    assert blob.download_as_bytes(start=10, end=19) == DATA[10:20]
    assert blob.download_as_bytes(start=len(DATA) - 5) == DATA[-5:]
    ranges = [v for _m, _p, h in fake_gcs.requests for k, v in h.items() if k.lower() == "range"]
    assert "bytes=10-19" in ranges


def test_access_denied_messages() -> None:
    from botocore.exceptions import ClientError
    from google.api_core.exceptions import Forbidden

    error = {"Error": {"Code": "AccessDenied", "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
    denied = ClientError(error, "GetObject")  # type: ignore[arg-type]
    assert "denied" in s3._describe(denied, "s3://b/k") and "s3:GetObject" in s3._describe(denied, "s3://b/k")
    assert "denied" in gcs._describe(Forbidden("no"), "gs://b/k")
