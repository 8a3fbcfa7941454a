"""A fake of the two Artifact Registry API v1 calls the deploy makes (repositories.get and
repositories.create, with its long-running operation), from the REST reference
(cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.fakes.local_server import LocalServer

_REPO = re.compile(r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+)/repositories(?:/(?P<id>[^/]+))?$")
_OPERATION = re.compile(r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/operations/[^/]+)$")
# "The repository name ... must start with a letter, end with a letter or number, and only contain
# lowercase letters, numbers, and hyphens" (repositories.create, repositoryId)
_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
FORMATS = {"DOCKER", "MAVEN", "NPM", "APT", "YUM", "PYTHON", "GO", "KFP", "GENERIC"}


class FakeArtifactRegistry(LocalServer):
    def __init__(self) -> None:
        self.repositories: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self._lock = threading.Lock()
        self._serve(_handler(self), "fake-artifact-registry")

    def reset(self) -> None:
        with self._lock:
            self.repositories.clear()
            self.operations.clear()
            self.requests.clear()


def _handler(fake: FakeArtifactRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: int, state: str, message: str) -> None:
            self._answer(status, {"error": {"code": status, "message": message, "status": state}})

        def do_GET(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            fake.requests.append(("GET", path, {}))
            repo, operation = _REPO.match(path), _OPERATION.match(path)
            with fake._lock:
                if repo and repo["id"]:
                    name = f"{repo['parent']}/repositories/{repo['id']}"
                    if name in fake.repositories:
                        return self._answer(200, fake.repositories[name])
                    return self._error(404, "NOT_FOUND", f"Requested entity was not found.")
                if operation and operation["name"] in fake.operations:
                    return self._answer(200, fake.operations[operation["name"]])
            self._error(404, "NOT_FOUND", "Requested entity was not found.")

        def do_POST(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            fake.requests.append(("POST", parts.path, body))
            repo = _REPO.match(parts.path)
            repository_id = parse_qs(parts.query).get("repositoryId", [""])[0]
            if not repo or repo["id"]:
                return self._error(404, "NOT_FOUND", "Requested entity was not found.")
            if not _ID.match(repository_id):
                return self._error(400, "INVALID_ARGUMENT", f"repositoryId {repository_id!r} is invalid")
            if body.get("format") not in FORMATS:
                return self._error(400, "INVALID_ARGUMENT", "format must be one of " + ", ".join(sorted(FORMATS)))
            name = f"{repo['parent']}/repositories/{repository_id}"
            with fake._lock:
                if name in fake.repositories:
                    return self._error(409, "ALREADY_EXISTS", f"the repository already exists: {name}")
                created = {**body, "name": name}
                fake.repositories[name] = created
                operation = {"name": f"{repo['parent']}/operations/{len(fake.operations) + 1}", "done": True,
                             "response": {"@type": "type.googleapis.com/google.devtools.artifactregistry.v1.Repository",
                                          **created}}
                fake.operations[operation["name"]] = operation
            # the real API answers an operation not yet done; its first GetOperation says done
            self._answer(200, {**operation, "done": False, "response": None})

    return Handler
