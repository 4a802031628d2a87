"""Turning a submitted config into a job's request event. Validation is the contracts loader's job.

:func:`validate_submission` is the one place that knows the loader's API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pfactory.contracts.events import Event, FeatureSetRef, JobKind, MaterialisationRequested, TrainRequested
from pfactory.contracts.issues import ConfigError, ConfigIssue
from pfactory.contracts.loader import load_config, load_config_dict


@dataclass(frozen=True)
class ValidConfig:
    """What the gateway needs from a config the loader accepted."""

    kind: JobKind
    name: str
    feature_set: FeatureSetRef
    document: dict[str, Any]


def validate_submission(
    *, yaml_text: str | None = None, data: dict[str, Any] | None = None, filename: str | None = None
) -> ValidConfig:
    """Validate a config with the contracts loader.

    Args:
        yaml_text: the config as YAML text (issues get line and column).
        data: the config as an already parsed JSON object.
        filename: reported in issues.

    Returns:
        The job kind, config name, feature set and the normalised config document.

    Raises:
        ConfigError: every problem the loader found.
    """
    if yaml_text is not None:
        config = load_config(yaml_text, filename=filename)  # a str is always text, never a path
    else:
        config = load_config_dict(data if data is not None else {})
    document = config.model_dump(mode="json", by_alias=True)
    if config.kind == "FeatureSet":
        ref = FeatureSetRef(name=config.metadata.name, version=str(config.spec.version))
        return ValidConfig(JobKind.MATERIALISE, config.metadata.name, ref, document)
    if config.kind == "Model":
        ref = FeatureSetRef(name=config.spec.feature_set.name, version=str(config.spec.feature_set.version))
        return ValidConfig(JobKind.TRAIN, config.metadata.name, ref, document)
    raise ConfigError(
        [
            ConfigIssue(
                file=filename,
                line=None,
                column=None,
                path="kind",
                message=f"the gateway runs FeatureSet and Model configs, not {config.kind}",
                expected="FeatureSet or Model",
                code="unsupported_kind",
            )
        ]
    )


def request_event(
    config: ValidConfig, *, job_id: str, submitted_by: str | None, start_ds: date | None, end_ds: date | None
) -> Event:
    """The request event for an accepted config: FeatureSet → materialise, Model → train."""
    if config.kind is JobKind.MATERIALISE:
        return MaterialisationRequested(
            job_id=job_id,
            feature_set=config.feature_set,
            config=config.document,
            start_ds=start_ds,
            end_ds=end_ds,
            submitted_by=submitted_by,
        )
    return TrainRequested(
        job_id=job_id,
        model_name=config.name,
        feature_set=config.feature_set,
        config=config.document,
        submitted_by=submitted_by,
    )
