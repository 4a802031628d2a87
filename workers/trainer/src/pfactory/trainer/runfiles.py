"""Reading and writing a run's files (``spec.json``, ``result.json``, the model) in a folder or S3 prefix.

A run's folder is a local path, a ``file://`` URI or an ``s3://bucket/prefix``; pyarrow reaches both.
When no S3 endpoint is given, the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` environment
variables are honoured (pyarrow itself ignores them), so a run started with only a spec URI, in a pod
or a forked process, reaches the same store as the launcher that wrote the spec.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyarrow import fs
from pydantic import ValidationError

from pfactory.features.filesystems import resolve
from pfactory.trainer.jobspec import RESULT_FILE, SPEC_FILE, RunResult, RunSpec


class RunFileMissing(FileNotFoundError):
    """A run file that should be there is not (the run did not finish, or the URI is wrong)."""


class RunFileInvalid(ValueError):
    """A run file exists but does not hold what it should."""


def s3_endpoint(endpoint_url: str | None) -> str | None:
    """``endpoint_url``, else the endpoint the AWS SDKs read from the environment, else None (AWS)."""
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def join(folder_uri: str, name: str) -> str:
    """``folder_uri/name`` for a local path or URI."""
    return f"{folder_uri.rstrip('/')}/{name}"


def local_folder(uri: str) -> Path | None:
    """The local folder a URI names, or None when it is remote (``s3://``)."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        return None
    return Path(uri).absolute()


def write_bytes(
    folder_uri: str, name: str, data: bytes, *, endpoint_url: str | None = None, region: str | None = None
) -> str:
    """Write ``data`` to ``folder_uri/name`` whole (a reader never sees half a file); return its URI."""
    filesystem, folder = resolve(folder_uri, endpoint_url=s3_endpoint(endpoint_url), region=region)
    path = f"{folder}/{name}"
    if isinstance(filesystem, fs.LocalFileSystem):
        # S3 puts are atomic; a local file is written aside and renamed into place
        filesystem.create_dir(folder, recursive=True)
        staging = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        with filesystem.open_output_stream(staging) as stream:
            stream.write(data)
        filesystem.move(staging, path)
    else:
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
    return join(folder_uri, name)


def read_bytes(
    folder_uri: str, name: str, *, endpoint_url: str | None = None, region: str | None = None
) -> bytes:
    """The bytes of ``folder_uri/name``.

    Raises:
        RunFileMissing: there is no such file.
    """
    filesystem, folder = resolve(folder_uri, endpoint_url=s3_endpoint(endpoint_url), region=region)
    path = f"{folder}/{name}"
    try:
        with filesystem.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        raise RunFileMissing(f"{join(folder_uri, name)} does not exist") from None
    except OSError as error:
        # pyarrow's S3 filesystem reports a missing key as a generic OSError
        if filesystem.get_file_info(path).type == fs.FileType.NotFound:
            raise RunFileMissing(f"{join(folder_uri, name)} does not exist") from None
        raise error


def remove(folder_uri: str, name: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
    """Delete ``folder_uri/name`` if it exists."""
    filesystem, folder = resolve(folder_uri, endpoint_url=s3_endpoint(endpoint_url), region=region)
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_file(f"{folder}/{name}")


def write_spec(spec: RunSpec, *, endpoint_url: str | None = None, region: str | None = None) -> str:
    """Write ``spec.json`` into ``spec.output_uri``; return its URI (the argument of ``run-job``)."""
    data = spec.model_dump_json(indent=2).encode()
    return write_bytes(spec.output_uri, SPEC_FILE, data, endpoint_url=endpoint_url, region=region)


def read_spec(spec_uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> RunSpec:
    """The :class:`RunSpec` at ``spec_uri`` (the file itself, e.g. ``s3://b/runs/j1/trial-000/spec.json``).

    Raises:
        RunFileMissing: no file there.
        RunFileInvalid: the file is not a valid run spec.
    """
    folder, _, name = spec_uri.rstrip("/").rpartition("/")
    data = read_bytes(folder or ".", name, endpoint_url=endpoint_url, region=region)
    try:
        return RunSpec.model_validate_json(data)
    except ValidationError as error:
        raise RunFileInvalid(f"{spec_uri} is not a valid run spec: {error}") from None


def write_result(
    output_uri: str, result: RunResult, *, endpoint_url: str | None = None, region: str | None = None
) -> str:
    """Write ``result.json`` (last of a run's files: its presence means the run finished)."""
    data = result.model_dump_json(indent=2).encode()
    return write_bytes(output_uri, RESULT_FILE, data, endpoint_url=endpoint_url, region=region)


def read_result(output_uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> RunResult:
    """The ``result.json`` a run left in ``output_uri``.

    Raises:
        RunFileMissing: the run wrote no result (killed, crashed, or still running).
        RunFileInvalid: the file is not a valid result.
    """
    data = read_bytes(output_uri, RESULT_FILE, endpoint_url=endpoint_url, region=region)
    try:
        return RunResult.model_validate_json(data)
    except ValidationError as error:
        raise RunFileInvalid(f"{join(output_uri, RESULT_FILE)} is not a valid run result: {error}") from None


def collect_result(
    output_uri: str, *, endpoint_url: str | None = None, region: str | None = None
) -> tuple[RunResult | None, str | None]:
    """``(result, None)``, ``(None, None)`` when there is none, or ``(None, why it is unreadable)``."""
    try:
        return read_result(output_uri, endpoint_url=endpoint_url, region=region), None
    except RunFileMissing:
        return None, None
    except (RunFileInvalid, OSError) as error:
        return None, f"the run's result could not be read: {error}"
