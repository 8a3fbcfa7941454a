"""Release identity and versioned names, shared by both clouds.

A release is the digest of what a deploy puts in the cloud: the image (by digest where known),
the weights (by digest or URI) and every setting. The same inputs give the same release, so a
re-run finds its resources already there and changes nothing; any change gives a new release
whose resources carry new names, so a second deploy never collides with the first (the seed
articles' fixed Model and EndpointConfig names did).

Resources are tagged with :data:`APP_TAG`, :data:`DEPLOYMENT_TAG`, :data:`RELEASE_TAG` and
:data:`MODE_TAG`; those tags are the only state (no local state file), and only resources that
carry our app tag and the deployment's name are ever changed or deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

APP = "segment-anywhere"
APP_TAG = "segany:app"
DEPLOYMENT_TAG = "segany:deployment"
RELEASE_TAG = "segany:release"
MODE_TAG = "segany:mode"
RELEASE_LENGTH = 10  # hex digits: 40 bits, no collision in any deployment's history


def release_id(inputs: dict[str, Any]) -> str:
    """The digest of ``inputs`` (JSON-able; key order does not matter)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:RELEASE_LENGTH]


def versioned(deployment: str, release: str) -> str:
    """``NAME-RELEASE``: the name of a release's Model / EndpointConfig / revision."""
    return f"{deployment}-{release}"


def release_of(name: str, deployment: str) -> str | None:
    """The release in a :func:`versioned` name of this deployment, else None."""
    match = re.fullmatch(re.escape(deployment) + r"-([0-9a-f]{%d})" % RELEASE_LENGTH, name)
    return match.group(1) if match else None


def tags(deployment: str, release: str, mode: str) -> dict[str, str]:
    return {APP_TAG: APP, DEPLOYMENT_TAG: deployment, RELEASE_TAG: release, MODE_TAG: mode}


def is_ours(resource_tags: dict[str, str], deployment: str) -> bool:
    """Tagged by us for this deployment: the only resources a deploy, rollback or destroy touches."""
    return resource_tags.get(APP_TAG) == APP and resource_tags.get(DEPLOYMENT_TAG) == deployment
