"""A minimal fake of the Google Cloud Storage JSON API, enough for google-cloud-storage reads.

Serves, on 127.0.0.1 and a free port:

* ``GET /storage/v1/b/{bucket}``: bucket metadata (the client fetches it in the background);
* ``GET /storage/v1/b/{bucket}/o/{object}``: object metadata, or the bytes with ``alt=media``;
* ``GET /download/storage/v1/b/{bucket}/o/{object}?alt=media``: the bytes (the ``mediaLink``);
* ``GET /storage/v1/b/{bucket}/o?prefix=``: the objects under a prefix (one page);
* ``POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart``: an upload (what the batch runner writes);

with ``generation`` / ``ifGenerationMatch`` query parameters, ``Range: bytes=a-b`` (206),
``X-Goog-Hash`` (crc32c and md5) so the client verifies what it downloads, and JSON errors
shaped like the real ones. Objects are put from Python with :meth:`FakeGCS.put`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.fakes.local_server import LocalServer

_PATH = re.compile(r"^(?:/download)?/storage/v1/b/(?P<bucket>[^/]+)(?:/o/(?P<object>[^/]+))?/?$")
_LIST = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/?$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o/?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), as GCS reports it; pure Python, fine for test-sized objects."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass
class StoredObject:
    data: bytes
    generation: int
    content_type: str
    crc32c_b64: str
    md5_b64: str


class FakeGCS(LocalServer):
    """The fake server. ``endpoint`` is what STORAGE_EMULATOR_HOST should be set to."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self._generation = 1_700_000_000_000_000
        self._lock = threading.Lock()
        self._serve(_make_handler(self), "fake-gcs")

    def create_bucket(self, bucket: str) -> None:
        with self._lock:
            self.buckets.setdefault(bucket, {})

    def put(self, bucket: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` as gs://bucket/name (creating the bucket), with a new generation."""
        stored = StoredObject(
            data=bytes(data),
            generation=0,
            content_type=content_type,
            crc32c_b64=base64.b64encode(crc32c(data).to_bytes(4, "big")).decode(),
            md5_b64=base64.b64encode(hashlib.md5(data).digest()).decode(),
        )
        with self._lock:
            self._generation += 1
            stored.generation = self._generation
            self.buckets.setdefault(bucket, {})[name] = stored

    def clear(self) -> None:
        """Forget every bucket, object and logged request."""
        with self._lock:
            self.buckets.clear()
            self.requests.clear()

    def metadata(self, bucket: str, name: str, obj: StoredObject) -> dict[str, object]:
        path = f"/b/{bucket}/o/{quote(name, safe='')}"
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{obj.generation}",
            "selfLink": f"{self.endpoint}/storage/v1{path}",
            "mediaLink": f"{self.endpoint}/download/storage/v1{path}?generation={obj.generation}&alt=media",
            "name": name,
            "bucket": bucket,
            "generation": str(obj.generation),
            "metageneration": "1",
            "contentType": obj.content_type,
            "storageClass": "STANDARD",
            "size": str(len(obj.data)),
            "md5Hash": obj.md5_b64,
            "crc32c": obj.crc32c_b64,
            "etag": f"CK{obj.generation}=",
            "timeCreated": "2024-01-01T00:00:00.000Z",
            "updated": "2024-01-01T00:00:00.000Z",
        }


def _make_handler(fake: FakeGCS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            with fake._lock:
                fake.requests.append(("GET", self.path, dict(self.headers.items())))
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            listing = _LIST.match(parts.path)
            if listing is not None:
                return self._list(unquote(listing["bucket"]), query)
            match = _PATH.match(parts.path)
            if match is None:
                return self._error(404, f"Not Found: {parts.path}")
            bucket = unquote(match["bucket"])
            with fake._lock:
                objects = fake.buckets.get(bucket)
                name = unquote(match["object"]) if match["object"] else None
                obj = objects.get(name) if (objects is not None and name is not None) else None
            if objects is None:
                return self._error(404, "The specified bucket does not exist.")
            if name is None:
                body = {"kind": "storage#bucket", "name": bucket, "id": bucket, "location": "US",
                        "locationType": "multi-region", "projectNumber": "123456789"}
                return self._json(200, body)
            if obj is None or ("generation" in query and query["generation"] != str(obj.generation)):
                return self._error(404, f"No such object: {bucket}/{name}")
            if "ifGenerationMatch" in query and query["ifGenerationMatch"] != str(obj.generation):
                return self._error(412, "At least one of the pre-conditions you specified did not hold.")
            if query.get("alt") == "media" or parts.path.startswith("/download/"):
                return self._media(obj)
            return self._json(200, fake.metadata(bucket, name, obj))

        def _list(self, bucket: str, query: dict[str, str]) -> None:
            """objects.list (cloud.google.com/storage/docs/json_api/v1/objects/list): by prefix, one page."""
            with fake._lock:
                objects = fake.buckets.get(bucket)
                if objects is None:
                    return self._error(404, "The specified bucket does not exist.")
                items = [fake.metadata(bucket, name, obj) for name, obj in sorted(objects.items())
                         if name.startswith(query.get("prefix", ""))]
            return self._json(200, {"kind": "storage#objects", "items": items})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            """A multipart upload (objects.insert, uploadType=multipart): metadata JSON, then the bytes."""
            import email
            import email.policy

            with fake._lock:
                fake.requests.append(("POST", self.path, dict(self.headers.items())))
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            match = _UPLOAD.match(parts.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if match is None or query.get("uploadType") != "multipart":
                return self._error(400, f"only multipart uploads are faked, not {self.path}")
            bucket = unquote(match["bucket"])
            message = email.message_from_bytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP)
            metadata_part, media_part = list(message.iter_parts())
            metadata = json.loads(metadata_part.get_content())
            data = media_part.get_payload(decode=True)
            with fake._lock:
                if bucket not in fake.buckets:
                    return self._error(404, "The specified bucket does not exist.")
            fake.put(bucket, metadata["name"], data, metadata.get("contentType") or media_part.get_content_type())
            with fake._lock:
                obj = fake.buckets[bucket][metadata["name"]]
            return self._json(200, fake.metadata(bucket, metadata["name"], obj))

        def _media(self, obj: StoredObject) -> None:
            data, status, extra = obj.data, 200, {}
            header = self.headers.get("Range")
            if header:
                match = _RANGE.match(header.strip())
                size = len(obj.data)
                if match is None or (match[1] == "" and match[2] == ""):
                    return self._error(400, f"Invalid Range header {header!r}")
                if match[1] == "":
                    start, end = max(0, size - int(match[2])), size - 1
                else:
                    start = int(match[1])
                    end = min(int(match[2]), size - 1) if match[2] else size - 1
                if start >= size or start > end:
                    return self._error(416, "The requested range cannot be satisfied.")
                data, status = obj.data[start : end + 1], 206
                extra["Content-Range"] = f"bytes {start}-{end}/{size}"
            self.send_response(status)
            self.send_header("Content-Type", obj.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Goog-Hash", f"crc32c={obj.crc32c_b64},md5={obj.md5_b64}")
            self.send_header("X-Goog-Generation", str(obj.generation))
            self.send_header("X-Goog-Metageneration", "1")
            self.send_header("X-Goog-Stored-Content-Length", str(len(obj.data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, body: dict[str, object]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: int, message: str) -> None:
            reason = {400: "invalid", 404: "notFound", 412: "conditionNotMet", 416: "requestedRangeNotSatisfiable"}
            self._json(status, {"error": {"code": status, "message": message,
                                          "errors": [{"message": message, "domain": "global",
                                                      "reason": reason.get(status, "error")}]}})

    return Handler
