"""Turning a store root or data path (local path, ``file://`` or ``s3://``) into a pyarrow filesystem."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pyarrow import fs

_S3_CACHE: dict[tuple[str | None, str | None], fs.FileSystem] = {}
_S3_LOCK = threading.Lock()


def s3_filesystem(endpoint_url: str | None = None, region: str | None = None) -> fs.FileSystem:
    """A shared S3 filesystem per ``(endpoint_url, region)``.

    Args:
        endpoint_url: e.g. ``http://127.0.0.1:5000`` for moto_server or MinIO; None for AWS.
        region: the bucket's region; None lets the AWS SDK decide (``AWS_DEFAULT_REGION``...).

    Returns:
        A pyarrow ``S3FileSystem`` (built once, then reused: building one costs an SDK set-up).
    """
    key = (endpoint_url, region)
    with _S3_LOCK:
        cached = _S3_CACHE.get(key)
        if cached is None:
            options: dict[str, Any] = {}
            if endpoint_url:
                scheme, _, host = endpoint_url.rpartition("://")
                options.update(endpoint_override=host or endpoint_url, scheme=scheme or "https")
            if region:
                options["region"] = region
            cached = _S3_CACHE[key] = fs.S3FileSystem(**options)
        return cached


def resolve(
    uri_or_path: str, *, endpoint_url: str | None = None, region: str | None = None
) -> tuple[fs.FileSystem, str]:
    """The filesystem and the path inside it for a local path, ``file://`` URI or ``s3://bucket/prefix``.

    Args:
        uri_or_path: where the data is; a relative local path is taken from the working directory.
        endpoint_url: S3 endpoint override (ignored for local paths).
        region: S3 region (ignored for local paths).

    Returns:
        ``(filesystem, path)`` with no trailing slash: ``bucket/prefix`` for S3, an absolute path locally.

    Raises:
        ValueError: a scheme other than ``s3://`` or ``file://``.
    """
    if uri_or_path.startswith("s3://"):
        return s3_filesystem(endpoint_url, region), uri_or_path.removeprefix("s3://").rstrip("/")
    if uri_or_path.startswith("file://"):
        return fs.LocalFileSystem(), _local(unquote(urlparse(uri_or_path).path))
    if "://" in uri_or_path:
        scheme = uri_or_path.split("://", 1)[0]
        raise ValueError(f"unsupported scheme '{scheme}://' in '{uri_or_path}': use a local path or s3://")
    return fs.LocalFileSystem(), _local(uri_or_path)


def root_uri(uri_or_path: str) -> str:
    """A URI for ``uri_or_path`` as the materialiser spells it: ``s3://...`` or ``file:///abs/path``."""
    if uri_or_path.startswith("s3://"):
        return uri_or_path.rstrip("/")
    if uri_or_path.startswith("file://"):
        uri_or_path = unquote(urlparse(uri_or_path).path)
    return Path(_local(uri_or_path)).as_uri()


def _local(path: str) -> str:
    absolute = os.path.abspath(path)
    return absolute.rstrip("/") or "/"
