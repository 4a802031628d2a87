"""The credit feature set's SQL runs on Spark against the generated data and yields the declared features.

The SQL models are rendered with a minimal Jinja environment of our own (not the materialiser's), the
sources are registered as temp views read from their partition roots with Hive discovery (as the
materialiser does), and the models run in order on one local SparkSession for the module.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pfactory.contracts import load_config
from pfactory.contracts.configs.featureset import FeatureSetConfig
from tests.examples.conftest import EXAMPLES

pyspark_sql = pytest.importorskip("pyspark.sql")

START = dt.date(2024, 1, 1)
DAYS = 3
PER_DAY = 300
SEED = 5


@pytest.fixture(scope="module")
def config() -> FeatureSetConfig:
    loaded = load_config(EXAMPLES / "credit_features.yaml")
    assert isinstance(loaded, FeatureSetConfig)
    return loaded


@pytest.fixture(scope="module")
def raw(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("credit-spark")
    gen.generate(out, START, DAYS, PER_DAY, SEED, progress_every=0)
    return out


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local session for the module; an already running session (another suite's) is borrowed."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session_cls = pyspark_sql.SparkSession
    borrowed = session_cls.getActiveSession()
    base = borrowed or (
        session_cls.builder.master("local[1]")
        .appName("pfactory-examples-test")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    if borrowed is None:
        base.sparkContext.setLogLevel("ERROR")
    session = base.newSession()  # own temp views and SQL conf, whoever owns the context
    session.conf.set("spark.sql.session.timeZone", "UTC")
    yield session
    if borrowed is None:
        base.stop()


def _source_root(path: str, raw: Path) -> Path:
    """``data/raw/<source>/ds={{ ds }}/`` -> ``<raw>/<source>``: the root read with partition discovery."""
    segments = path.rstrip("/").split("/")
    cut = next(i for i, s in enumerate(segments) if "{{" in s or s.startswith("ds="))
    relative = "/".join(segments[:cut]).removeprefix("data/raw/")
    return raw / relative


def _render(config: FeatureSetConfig, ds: str) -> list[tuple[str, str]]:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    context = {
        "ds": ds,
        "source": lambda name: f"src_{name}",
        "ref": lambda name: f"mdl_{name}",
        "var": lambda key: config.spec.vars[key],
    }
    assert config.spec.models[-1].name == config.spec.output  # written in dependency order
    rendered = []
    for model in config.spec.models:
        assert model.sql is not None
        rendered.append((model.name, env.from_string(model.sql).render(**context)))
    return rendered


def _materialise(spark: Any, config: FeatureSetConfig, raw: Path, ds: str) -> pa.Table:
    for name, source in config.spec.sources.items():
        reader = spark.read.format(str(source.format))
        if source.format == "csv":
            reader = reader.option("header", True).option("inferSchema", True)
        reader.load(str(_source_root(source.path, raw))).createOrReplaceTempView(f"src_{name}")
    frame = None
    for name, sql in _render(config, ds):
        frame = spark.sql(sql)
        frame.createOrReplaceTempView(f"mdl_{name}")
    assert frame is not None
    return frame.orderBy(config.spec.entity[0]).toArrow()


@pytest.mark.parametrize("infer_partition_types", ["true", "false"], ids=["ds-as-date", "ds-as-string"])
def test_feature_sql_runs_and_yields_one_row_per_applicant(
    spark: Any,
    config: FeatureSetConfig,
    raw: Path,
    gen: ModuleType,
    infer_partition_types: str,
) -> None:
    spark.conf.set("spark.sql.sources.partitionColumnTypeInference.enabled", infer_partition_types)
    ds = (START + dt.timedelta(days=DAYS - 1)).isoformat()  # earlier days sit inside the lookback
    table = _materialise(spark, config, raw, ds)

    day = gen.generate_day(dt.date.fromisoformat(ds), PER_DAY, SEED)
    entity = config.spec.entity[0]
    ids = table[entity].to_pylist()
    assert ids == sorted(day.applicants["applicant_id"].tolist()), "exactly the day's applicants, once each"
    declared = [feature.name for feature in config.spec.features]
    missing = set(declared) - set(table.column_names)
    assert not missing, f"declared features missing from the output: {missing}"
    assert config.spec.timestamp in table.column_names
    for feature in config.spec.features:
        if not feature.nullable:
            assert table[feature.name].null_count == 0, f"{feature.name} is declared not nullable"
    assert table["debt_to_income"].null_count <= 0.05 * PER_DAY
    assert set(table["age_band"].to_pylist()) <= {"18-24", "25-39", "40-59", "60+"}
    utilisation = table["utilisation"].to_numpy()
    assert (utilisation >= 0).all() and (utilisation <= 5).all()
    assert (table["n_open_accounts"].to_numpy() == 0).any(), "thin-file applicants get 0 accounts"
    assert table["n_late_payments_90d"].to_numpy().max() > 0

    # the documented ground truth is a function of exactly these features
    dti = np.array([np.nan if v is None else v for v in table["debt_to_income"].to_pylist()], dtype=float)
    p = gen.default_probability(
        dti,
        utilisation,
        table["n_late_payments_90d"].to_numpy().astype(float),
        table["income"].to_numpy(),
        table["months_at_address"].to_numpy().astype(float),
    )
    order = np.argsort(day.applicants["applicant_id"])
    np.testing.assert_allclose(p, day.p_true[order], rtol=1e-9)
