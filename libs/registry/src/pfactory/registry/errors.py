"""Errors the registry raises; each message names the version or key it is about."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error."""


class VersionNotFoundError(RegistryError, LookupError):
    """No committed version (or alias, or live version) matches the request."""


class NotAllocatedError(RegistryError):
    """A commit names a version that was not allocated under its idempotency key."""


class IllegalTransitionError(RegistryError, ValueError):
    """A status change or alias move the lifecycle does not allow."""


class GateFailedError(IllegalTransitionError):
    """The version failed a gate (fairness, validation) and no admin override with a reason was given."""


class ConcurrentUpdateError(RegistryError):
    """A conditional write kept losing to concurrent writers; retry the request."""


class ArtifactNotFoundError(RegistryError, LookupError):
    """No artifact is stored under the key."""


class ArtifactIntegrityError(RegistryError):
    """The artifact's sha256 differs from the registered one; it is refused."""


class UntrustedTypeError(RegistryError):
    """The serialised model contains types outside the trusted allowlist; it is refused."""
