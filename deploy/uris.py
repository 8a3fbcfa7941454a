"""Object-store URIs (``s3://bucket/key``, ``gs://bucket/object``), shared by deploy/aws and deploy/gcp."""

from __future__ import annotations


def split_bucket_uri(uri: str, scheme: str, noun: str = "key") -> tuple[str, str]:
    """Split ``scheme://bucket/rest`` into (bucket, rest); ValueError when either is empty."""
    found, sep, rest = uri.partition("://")
    if found.lower() != scheme or not sep:
        raise ValueError(f"{uri!r} is not a {scheme}:// URI; use {scheme}://bucket/{noun}.")
    bucket, _, name = rest.partition("/")
    if not bucket or not name:
        raise ValueError(f"{uri!r} needs both a bucket and a {noun}, as in {scheme}://bucket/path/to/{noun}.")
    return bucket, name
