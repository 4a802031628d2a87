"""One wiring point for the registry's stores: embedded (folder + SQLite) or AWS (S3 + DynamoDB)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.index import VersionIndex, VersionLifecycle
from pfactory.registry.settings import DynamoDBVersionIndexSettings, S3ArtifactStoreSettings


class RegistrySettings(BaseSettings):
    """Which registry backends a service uses (env prefix ``PF_REGISTRY_``)."""

    model_config = SettingsConfigDict(env_prefix="PF_REGISTRY_", env_nested_delimiter="__", extra="forbid")

    backend: Literal["embedded", "aws"] = Field(
        default="embedded",
        description="'embedded': a local folder and SQLite under data_dir; 'aws': S3 and DynamoDB.",
    )
    data_dir: Path = Field(
        default=Path(".pfactory/registry"),
        description="Embedded backend: artifacts under <data_dir>/artifacts, metadata in <data_dir>/registry.db.",
    )
    s3: S3ArtifactStoreSettings | None = Field(
        default=None, description="AWS backend: the artifact bucket (env PF_REGISTRY_S3_*)."
    )
    dynamodb: DynamoDBVersionIndexSettings | None = Field(
        default=None, description="AWS backend: the metadata table (env PF_REGISTRY_DYNAMODB_*)."
    )


class RegistryIndex(VersionIndex, VersionLifecycle, Protocol):
    """A metadata backend plays both roles."""

    async def close(self) -> None:
        """Release connections."""


class ClosableArtifactStore(ArtifactStore, Protocol):
    """An artifact store that holds connections."""

    async def close(self) -> None:
        """Release connections."""


@dataclass
class Registry:
    """The registry's two stores, built once per process."""

    artifacts: ClosableArtifactStore
    index: RegistryIndex

    async def close(self) -> None:
        """Close both stores."""
        await self.index.close()
        await self.artifacts.close()


async def build_registry(settings: RegistrySettings) -> Registry:
    """Build the stores the settings name; the AWS backend creates its table if it is missing.

    Raises:
        ValueError: the AWS backend without its S3 or DynamoDB settings.
    """
    if settings.backend == "embedded":
        from pfactory.registry.local import LocalArtifactStore
        from pfactory.registry.sqlite import SqliteVersionIndex

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return Registry(
            LocalArtifactStore(settings.data_dir / "artifacts"),
            SqliteVersionIndex(settings.data_dir / "registry.db"),
        )
    if settings.s3 is None or settings.dynamodb is None:
        raise ValueError(
            "PF_REGISTRY_BACKEND=aws needs both the bucket (PF_REGISTRY_S3__BUCKET) "
            "and the table (PF_REGISTRY_DYNAMODB__TABLE_NAME); set them, or use PF_REGISTRY_BACKEND=embedded"
        )
    from pfactory.registry.dynamodb import DynamoDBVersionIndex
    from pfactory.registry.s3 import S3ArtifactStore

    index = DynamoDBVersionIndex(settings.dynamodb)
    await index.create_table()
    return Registry(S3ArtifactStore(settings.s3), index)


def build_artifact_store(settings: RegistrySettings) -> ClosableArtifactStore:
    """The artifact store alone, for services that stage binaries but never touch the index (trainers).

    Raises:
        ValueError: the AWS backend without its S3 settings.
    """
    if settings.backend == "embedded":
        from pfactory.registry.local import LocalArtifactStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return LocalArtifactStore(settings.data_dir / "artifacts")
    if settings.s3 is None:
        raise ValueError(
            "PF_REGISTRY_BACKEND=aws needs the bucket (PF_REGISTRY_S3__BUCKET); set it, "
            "or use PF_REGISTRY_BACKEND=embedded"
        )
    from pfactory.registry.s3 import S3ArtifactStore

    return S3ArtifactStore(settings.s3)


def transient_errors() -> tuple[type[BaseException], ...]:
    """Registry errors worth retrying: lost write races, and AWS connection failures and timeouts.

    botocore's connection errors do not derive from Python's ``ConnectionError``, so a worker's
    retry policy would treat an S3 or DynamoDB outage as permanent without these.
    """
    from botocore.exceptions import ConnectionError as BotoConnectionError  # type: ignore[import-untyped]
    from botocore.exceptions import HTTPClientError

    from pfactory.registry.errors import ConcurrentUpdateError

    return (ConcurrentUpdateError, BotoConnectionError, HTTPClientError)
