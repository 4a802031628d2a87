"""Safe model serialisation: skops round trip, sha256 checked first, untrusted types refused."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest
import skops.io as sio  # type: ignore[import-untyped]
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin  # type: ignore[import-untyped]
from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline, make_pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

from pfactory.registry.errors import ArtifactIntegrityError, UntrustedTypeError
from pfactory.registry.serialization import dump_model, load_model, sha256_hex

LABEL = "model=credit_default/feature_set=credit_features@3/version=4"


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A custom step living outside the trusted modules."""

    def fit(self, x: NDArray[np.float64], y: object = None) -> Doubler:
        return self

    def transform(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return x * 2


@pytest.fixture
def data() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    x = np.random.default_rng(7).normal(size=(200, 4))
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)


def test_round_trip_of_a_pipeline_predicts_the_same(
    data: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    x, y = data
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    blob = dump_model(pipeline)
    loaded = load_model(blob, expected_sha256=sha256_hex(blob), version_label=LABEL)
    assert isinstance(loaded, Pipeline)
    np.testing.assert_array_equal(loaded.predict_proba(x), pipeline.predict_proba(x))


def test_the_archive_is_skops_own_with_a_compact_schema(
    data: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    """Same members and the same parsed schema as ``skops.io.dumps`` writes, only without indentation."""
    x, y = data
    pipeline = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=5)).fit(x, y)
    ours, theirs = dump_model(pipeline), sio.dumps(pipeline)
    with zipfile.ZipFile(io.BytesIO(ours)) as a, zipfile.ZipFile(io.BytesIO(theirs)) as b:
        schema_a, schema_b = a.read("schema.json"), b.read("schema.json")
        assert len(a.namelist()) == len(b.namelist())
    assert b"\n" not in schema_a and len(schema_a) < len(schema_b) / 2

    def normalised(raw: bytes) -> str:  # ids and array member names are object ids, new per dump
        text = json.dumps(json.loads(raw), sort_keys=True)
        return re.sub(r'"__id__": [0-9]+', '"__id__": N', re.sub(r'"[0-9]+\.npy"', '"N.npy"', text))

    assert normalised(schema_a) == normalised(schema_b)
    loaded = load_model(ours, expected_sha256=sha256_hex(ours), version_label=LABEL)
    np.testing.assert_array_equal(loaded.predict_proba(x), pipeline.predict_proba(x))


def test_types_under_allowed_modules_are_trusted_explicitly(
    data: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    x, y = data
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    blob = dump_model(model)
    loaded = load_model(blob, expected_sha256=sha256_hex(blob), version_label=LABEL)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with pytest.raises(UntrustedTypeError, match=r"omits: sklearn\.ensemble\._hist_gradient_boosting"):
        load_model(blob, expected_sha256=sha256_hex(blob), version_label=LABEL, trusted=[])


def test_a_tampered_byte_is_refused_naming_the_version_and_both_hashes(
    data: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    blob = dump_model(LogisticRegression().fit(*data))
    expected = sha256_hex(blob)
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ArtifactIntegrityError) as caught:
        load_model(bytes(tampered), expected_sha256=expected, version_label=LABEL)
    message = str(caught.value)
    assert LABEL in message and expected in message and sha256_hex(bytes(tampered)) in message


def test_a_custom_type_outside_the_allowlist_is_refused(
    data: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    x, y = data
    blob = dump_model(make_pipeline(Doubler(), LogisticRegression()).fit(x, y))
    with pytest.raises(
        UntrustedTypeError, match=rf"{re.escape(LABEL)}.*tests\.registry\.test_serialization\.Doubler"
    ):
        load_model(blob, expected_sha256=sha256_hex(blob), version_label=LABEL)
    with pytest.raises(UntrustedTypeError, match=r"outside the trusted modules.*tests\.registry"):
        load_model(
            blob,
            expected_sha256=sha256_hex(blob),
            version_label=LABEL,
            trusted=["tests.registry.test_serialization.Doubler"],
        )


def test_no_pickle_in_the_registry() -> None:
    from pathlib import Path

    import pfactory.registry

    for path in Path(next(iter(pfactory.registry.__path__))).glob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "joblib" not in text, path
