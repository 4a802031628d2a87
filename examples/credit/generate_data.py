"""Deterministic generator of synthetic retail credit applications for the reference example.

It writes the raw sources that ``examples/credit_features.yaml`` reads and the labels that
``examples/credit_model.yaml`` trains on, with a *known* ground truth and an *injected* group bias
that the fairness checks must catch::

    python examples/credit/generate_data.py --out data/raw --start 2024-01-01 --days 60 \\
        --applicants-per-day 2000 --seed 7

or, from Python, ``generate(out_dir, start, days, applicants_per_day, seed) -> Summary``.

Layout under ``--out`` (default ``data/raw``, matching the ``data/raw/<source>/ds={{ ds }}/`` paths of
the feature set; ``ds`` is a Hive partition directory, never a column inside a file)::

    applicants/ds=YYYY-MM-DD/part-0.parquet    applicant_id, age, gender, annual_income,
                                               monthly_debt_payments, months_at_address,
                                               employment_status
    bureau/ds=YYYY-MM-DD/part-0.csv            applicant_id, balance, credit_limit (header; one row
                                               per open account; "thin-file" applicants have none)
    transactions/ds=YYYY-MM-DD/part-0.parquet  applicant_id, days_past_due, amount (the applicant's
                                               repayments over the 90 days before the application,
                                               written on the application day)
    labels/part-YYYY-MM-DD.parquet             applicant_id, label_date (= application ds),
                                               defaulted_12m (0/1, as *recorded*, bias included)
    ground_truth.json                          the formula, coefficients, bias and realised rates

Every day is drawn from its own generator seeded with ``(seed, day ordinal)``, so a day's files do not
depend on ``start`` or ``days``: generating 30 days and then the next 30 gives the same bytes as 60.

Ground truth (``GROUND_TRUTH``): the probability of default within 12 months is a logistic function
of the features exactly as the feature set's SQL computes them::

    logit p = b0 + b_dti * min(debt_to_income, 3)          (a null ratio, i.e. zero income, counts as 3)
                 + b_util * min(utilisation, 2)            (0 for applicants without a bureau file)
                 + b_late * n_late_payments_90d            (payments more than 30 days past due)
                 + b_income * ln(max(income, 1000) / 40000)
                 + b_address * ln(1 + months_at_address / 12)

and the true outcome is Bernoulli(p). Age and gender do not enter p.

Injected bias (``BIAS``): for applicants whose ``age_band`` is ``18-24`` the *recorded* label of a true
non-defaulter is flipped to 1 with probability ``rate`` (0.50), so the recorded default rate of that
group is ``p + rate * (1 - p)`` instead of ``p``. Gender is left unbiased as a control. A model trained
on the recorded labels (``age`` is one of its inputs) learns the bias and shows a demographic parity
and equal opportunity gap for ``age_band``; the fairness gates must refuse it. With the defaults the
group's true default rate is about 0.12 (0.09 elsewhere) but its recorded rate about 0.56; the model
config's HistGradientBoosting, fitted on 48 days and tested on 12, reaches roc_auc ~0.84 and at a 0.5
threshold selects ~88% of 18-24s against ~3% of the rest (demographic parity difference ~0.86, equal
opportunity difference ~0.70; at a base-rate threshold ~0.85 and ~0.49), far over the 0.1 constraints.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_OUT = "data/raw"
EMPLOYMENT_STATUSES = ("employed", "self_employed", "unemployed", "retired", "student")
GENDERS = ("female", "male", "non_binary")
AGE_BANDS = ("18-24", "25-39", "40-59", "60+")
LATE_DAYS = 30
"""A payment counts as late when ``days_past_due`` exceeds this (the feature set's ``late_days``)."""

GROUND_TRUTH: dict[str, Any] = {
    "target": "defaulted_12m",
    "link": "logistic",
    "formula": (
        "logit(p) = intercept + debt_to_income * min(debt_to_income, 3) + utilisation * min(utilisation, 2)"
        " + n_late_payments_90d * n_late_payments_90d + log_income * ln(max(income, 1000) / 40000)"
        " + log_months_at_address * ln(1 + months_at_address / 12)"
    ),
    "coefficients": {
        "intercept": -3.6,
        "debt_to_income": 1.6,
        "utilisation": 1.3,
        "n_late_payments_90d": 0.6,
        "log_income": -0.5,
        "log_months_at_address": -0.3,
    },
    "feature_definitions": {
        "debt_to_income": "monthly_debt_payments * 12 / annual_income, capped at 3; null (zero income) -> 3",
        "utilisation": "sum(balance) / sum(credit_limit) over bureau accounts, capped at 2; no accounts -> 0",
        "n_late_payments_90d": f"count of transactions with days_past_due > {LATE_DAYS} in the last 90 days",
        "income": "annual_income, floored at 1000",
        "months_at_address": "months_at_address",
    },
    "excluded_from_truth": ["age", "age_band", "gender", "employment_status", "n_open_accounts"],
}

BIAS: dict[str, Any] = {
    "attribute": "age_band",
    "group": "18-24",
    "definition": "age < 25",
    "mechanism": "recorded label of a true non-defaulter in the group is flipped 0 -> 1",
    "rate": 0.50,
    "expected_recorded_rate": "p_true + rate * (1 - p_true) within the group; p_true elsewhere",
    "control_attribute": "gender (no injected bias)",
}


@dataclass(frozen=True)
class Summary:
    """What a `generate` run wrote."""

    out_dir: str
    start: str
    end: str
    days: int
    seed: int
    applicants: int
    bureau_rows: int
    transaction_rows: int
    true_default_rate: float
    recorded_default_rate: float
    seconds: float
    ground_truth_path: str
    files: list[str] = field(default_factory=list)
    """Every file written, relative to ``out_dir``, sorted."""


@dataclass
class DayData:
    """One application day, as columns (numpy arrays), plus the ground truth for it."""

    ds: dt.date
    applicants: dict[str, np.ndarray]
    bureau: dict[str, np.ndarray]
    transactions: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    p_true: np.ndarray
    true_label: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return result


def age_band(age: np.ndarray) -> np.ndarray:
    """The feature set's ``age_band`` for integer ages."""
    return np.select([age < 25, age < 40, age < 60], list(AGE_BANDS[:3]), default=AGE_BANDS[3]).astype(object)


def default_probability(
    debt_to_income: np.ndarray,
    utilisation: np.ndarray,
    n_late_payments_90d: np.ndarray,
    income: np.ndarray,
    months_at_address: np.ndarray,
    coefficients: dict[str, float] | None = None,
) -> np.ndarray:
    """The ground-truth probability of default, from the features as the feature set computes them.

    ``debt_to_income`` may hold NaN (zero income): it counts as the cap, 3.
    """
    c = coefficients or GROUND_TRUTH["coefficients"]
    dti = np.where(np.isnan(debt_to_income), 3.0, np.minimum(debt_to_income, 3.0))
    logit = (
        c["intercept"]
        + c["debt_to_income"] * dti
        + c["utilisation"] * np.minimum(utilisation, 2.0)
        + c["n_late_payments_90d"] * n_late_payments_90d
        + c["log_income"] * np.log(np.maximum(income, 1000.0) / 40000.0)
        + c["log_months_at_address"] * np.log1p(months_at_address / 12.0)
    )
    return _sigmoid(logit)


def generate_day(ds: dt.date, n: int, seed: int, bias_rate: float = BIAS["rate"]) -> DayData:
    """Draw one day's applicants, bureau accounts, repayments and labels (vectorised)."""
    rng = np.random.default_rng([seed, ds.toordinal()])
    prefix = f"APP{ds:%Y%m%d}"
    applicant_id = np.array([f"{prefix}{i:06d}" for i in range(n)], dtype=object)

    # demographics
    age = np.clip(np.rint(18 + rng.gamma(shape=2.2, scale=11.0, size=n)), 18, 90).astype(np.int32)
    gender = rng.choice(np.array([*GENDERS, None], dtype=object), size=n, p=[0.485, 0.475, 0.01, 0.03])
    p_emp = np.empty((n, len(EMPLOYMENT_STATUSES)))
    young, old = age < 23, age >= 66
    p_emp[:] = [0.78, 0.12, 0.07, 0.01, 0.02]
    p_emp[young] = [0.50, 0.04, 0.12, 0.00, 0.34]
    p_emp[old] = [0.15, 0.08, 0.02, 0.75, 0.00]
    u = rng.random(n)[:, None]
    emp_idx = (u > np.cumsum(p_emp, axis=1)).sum(axis=1).clip(0, len(EMPLOYMENT_STATUSES) - 1)
    employment_status = np.array(EMPLOYMENT_STATUSES, dtype=object)[emp_idx]

    # declared finances
    median_income = np.array([38_000, 42_000, 9_000, 22_000, 8_000], dtype=float)[emp_idx]
    sigma_income = np.array([0.45, 0.75, 0.6, 0.4, 0.5])[emp_idx]
    age_curve = np.exp(-0.6 * ((age - 50) / 30.0) ** 2)
    income = median_income * age_curve / np.exp(-0.6 * 0.25) * np.exp(sigma_income * rng.standard_normal(n))
    income = np.round(income, -2)
    no_income = np.isin(emp_idx, [2, 4]) & (rng.random(n) < 0.08)
    income[no_income] = 0.0
    dti_declared = rng.beta(2.0, 5.0, n) * 1.1
    dti_declared[rng.random(n) < 0.07] = 0.0
    monthly_debt = np.round(dti_declared * income / 12.0, 2)
    monthly_debt[no_income] = np.round(rng.lognormal(5.0, 0.7, no_income.sum()), 2)
    max_months = np.minimum(1200, (age - 16) * 12)
    months_at_address = np.minimum(
        np.rint(rng.exponential(12.0 * (2.0 + 0.25 * (age - 18)), n)), max_months
    ).astype(np.int32)

    # bureau: one row per open account; thin-file applicants (more often young) have none
    thin = rng.random(n) < np.where(age < 22, 0.25, 0.05)
    n_accounts = np.where(thin, 0, 1 + rng.poisson(np.where(age < 25, 1.0, 2.2), n))
    owner = np.repeat(np.arange(n), n_accounts)
    base_util = rng.beta(1.3, 2.7, n)
    limit_median = 1500.0 + 0.12 * np.maximum(income, 5000.0)
    credit_limit = np.maximum(np.round(limit_median[owner] * rng.lognormal(0.0, 0.6, owner.size), -2), 200.0)
    acc_util = np.clip(base_util[owner] * np.exp(0.4 * rng.standard_normal(owner.size)), 0.0, 1.5)
    balance = np.round(credit_limit * acc_util, 2)
    sum_limit = np.bincount(owner, weights=credit_limit, minlength=n)
    sum_balance = np.bincount(owner, weights=balance, minlength=n)
    utilisation = np.divide(sum_balance, sum_limit, out=np.zeros(n), where=sum_limit > 0)

    # repayments over the last 90 days: 3 a month per account; thin files pay a few other bills
    n_payments = np.where(n_accounts > 0, 3 * n_accounts, rng.poisson(1.0, n))
    payer = np.repeat(np.arange(n), n_payments)
    with np.errstate(divide="ignore", invalid="ignore"):
        dti_feature = np.where(income > 0, monthly_debt * 12.0 / income, np.nan)
    stress = rng.standard_normal(n)
    dti_capped = np.where(np.isnan(dti_feature), 3.0, np.minimum(dti_feature, 3.0))
    q_late = _sigmoid(-4.2 + 1.4 * dti_capped + 1.6 * np.minimum(utilisation, 2.0) + 1.1 * stress)
    r = rng.random(payer.size)
    late = r < q_late[payer]
    mild = ~late & (r < 3.0 * q_late[payer])
    days_past_due = np.zeros(payer.size, dtype=np.int32)
    days_past_due[late] = np.minimum(LATE_DAYS + rng.geometric(1 / 25.0, late.sum()), 180)
    days_past_due[mild] = rng.integers(1, LATE_DAYS + 1, mild.sum())
    amount = np.round(np.maximum(25.0, rng.lognormal(np.log(150.0), 0.8, payer.size)), 2)
    n_late = np.bincount(payer, weights=days_past_due > LATE_DAYS, minlength=n)

    # ground truth and the recorded (biased) label
    p_true = default_probability(dti_feature, utilisation, n_late, income, months_at_address.astype(float))
    true_label = (rng.random(n) < p_true).astype(np.int8)
    in_group = age < 25
    flip = in_group & (true_label == 0) & (rng.random(n) < bias_rate)
    recorded = np.where(flip, 1, true_label).astype(np.int8)

    return DayData(
        ds=ds,
        applicants={
            "applicant_id": applicant_id,
            "age": age,
            "gender": gender,
            "annual_income": income,
            "monthly_debt_payments": monthly_debt,
            "months_at_address": months_at_address,
            "employment_status": employment_status,
        },
        bureau={"applicant_id": applicant_id[owner], "balance": balance, "credit_limit": credit_limit},
        transactions={"applicant_id": applicant_id[payer], "days_past_due": days_past_due, "amount": amount},
        labels={"applicant_id": applicant_id, "defaulted_12m": recorded},
        p_true=p_true,
        true_label=true_label,
    )


APPLICANTS_SCHEMA = pa.schema(
    [
        ("applicant_id", pa.string()),
        ("age", pa.int32()),
        ("gender", pa.string()),
        ("annual_income", pa.float64()),
        ("monthly_debt_payments", pa.float64()),
        ("months_at_address", pa.int32()),
        ("employment_status", pa.string()),
    ]
)
TRANSACTIONS_SCHEMA = pa.schema(
    [("applicant_id", pa.string()), ("days_past_due", pa.int32()), ("amount", pa.float64())]
)
LABELS_SCHEMA = pa.schema(
    [("applicant_id", pa.string()), ("label_date", pa.date32()), ("defaulted_12m", pa.int8())]
)
BUREAU_COLUMNS = ("applicant_id", "balance", "credit_limit")


def _write_parquet(columns: dict[str, Any], schema: pa.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)
    pq.write_table(table, path, compression="snappy")


def _write_bureau_csv(bureau: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(BUREAU_COLUMNS)]
    lines += [
        f"{a},{b:.2f},{c:.2f}"
        for a, b, c in zip(bureau["applicant_id"], bureau["balance"], bureau["credit_limit"], strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_day(day: DayData, out: Path) -> list[Path]:
    """Write one day's partitions under ``out``; return the files written."""
    part = f"ds={day.ds.isoformat()}"
    files = [
        out / "applicants" / part / "part-0.parquet",
        out / "bureau" / part / "part-0.csv",
        out / "transactions" / part / "part-0.parquet",
        out / "labels" / f"part-{day.ds.isoformat()}.parquet",
    ]
    _write_parquet(day.applicants, APPLICANTS_SCHEMA, files[0])
    _write_bureau_csv(day.bureau, files[1])
    _write_parquet(day.transactions, TRANSACTIONS_SCHEMA, files[2])
    n = len(day.labels["applicant_id"])
    labels = {**day.labels, "label_date": [day.ds] * n}
    _write_parquet(labels, LABELS_SCHEMA, files[3])
    return files


def _rate(values: np.ndarray, mask: np.ndarray) -> float | None:
    return round(float(values[mask].mean()), 6) if mask.any() else None


def generate(
    out_dir: str | Path = DEFAULT_OUT,
    start: str | dt.date = "2024-01-01",
    days: int = 60,
    applicants_per_day: int = 2000,
    seed: int = 7,
    *,
    bias_rate: float = BIAS["rate"],
    progress_every: int = 10,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """Generate ``days`` days of applications from ``start`` into ``out_dir``; return a `Summary`.

    Args:
        out_dir: root folder; sources go to ``<out_dir>/<source>/ds=YYYY-MM-DD/``.
        start: first application date (``YYYY-MM-DD`` or a date).
        days: number of consecutive days.
        applicants_per_day: applications per day.
        seed: the random seed; the same seed writes byte-identical files.
        bias_rate: the share of the 18-24 group's true non-defaulters recorded as defaulted.
        progress_every: report progress every this many days (0: never).
        progress: where progress lines go (default: stderr).
    """
    if days < 1 or applicants_per_day < 1:
        raise ValueError("days and applicants_per_day must be at least 1")
    if not 0.0 <= bias_rate <= 1.0:
        raise ValueError("bias_rate must be within [0, 1]")
    began = time.perf_counter()
    first = dt.date.fromisoformat(start) if isinstance(start, str) else start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda line: print(line, file=sys.stderr, flush=True))

    files: list[Path] = []
    bureau_rows = transaction_rows = 0
    ages, genders, p_true, true_labels, recorded = [], [], [], [], []
    for offset in range(days):
        ds = first + dt.timedelta(days=offset)
        day = generate_day(ds, applicants_per_day, seed, bias_rate)
        files += write_day(day, out)
        bureau_rows += len(day.bureau["applicant_id"])
        transaction_rows += len(day.transactions["applicant_id"])
        ages.append(day.applicants["age"])
        genders.append(day.applicants["gender"])
        p_true.append(day.p_true)
        true_labels.append(day.true_label)
        recorded.append(day.labels["defaulted_12m"])
        if progress_every and ((offset + 1) % progress_every == 0 or offset + 1 == days):
            report(
                f"generated {offset + 1}/{days} days (through {ds}), "
                f"{(offset + 1) * applicants_per_day:,} applicants, {time.perf_counter() - began:.1f}s"
            )

    age = np.concatenate(ages)
    gender = np.concatenate(genders)
    p = np.concatenate(p_true)
    truth = np.concatenate(true_labels).astype(float)
    rec = np.concatenate(recorded).astype(float)
    bands = age_band(age)
    everyone = np.ones(age.size, dtype=bool)

    def rates(mask: np.ndarray) -> dict[str, Any]:
        return {
            "applicants": int(mask.sum()),
            "mean_p_true": _rate(p, mask),
            "true_default_rate": _rate(truth, mask),
            "recorded_default_rate": _rate(rec, mask),
        }

    in_group = bands == BIAS["group"]
    negatives = in_group & (truth == 0)
    realised_flip = _rate(rec, negatives)
    end = first + dt.timedelta(days=days - 1)
    ground_truth = {
        "generator": "examples/credit/generate_data.py",
        "seed": seed,
        "start": first.isoformat(),
        "end": end.isoformat(),
        "days": days,
        "applicants_per_day": applicants_per_day,
        "late_days": LATE_DAYS,
        "ground_truth": GROUND_TRUTH,
        "bias": {**BIAS, "rate": bias_rate, "realised_flip_rate": realised_flip},
        "realised": {
            "overall": rates(everyone),
            "age_band": {band: rates(bands == band) for band in AGE_BANDS},
            "gender": {
                str(g): rates(np.array([value == g for value in gender], dtype=bool))
                for g in (*GENDERS, None)
            },
            "recorded_rate_gap_group_vs_rest": round(float(rec[in_group].mean() - rec[~in_group].mean()), 6),
            "true_rate_gap_group_vs_rest": round(float(truth[in_group].mean() - truth[~in_group].mean()), 6),
        },
    }
    gt_path = out / "ground_truth.json"
    gt_path.write_text(json.dumps(ground_truth, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    files.append(gt_path)

    return Summary(
        out_dir=str(out),
        start=first.isoformat(),
        end=end.isoformat(),
        days=days,
        seed=seed,
        applicants=int(age.size),
        bureau_rows=bureau_rows,
        transaction_rows=transaction_rows,
        true_default_rate=round(float(truth.mean()), 6),
        recorded_default_rate=round(float(rec.mean()), 6),
        seconds=round(time.perf_counter() - began, 3),
        ground_truth_path=str(gt_path),
        files=sorted(str(f.relative_to(out)) for f in files),
    )


def main(argv: list[str] | None = None) -> int:
    """The command line; prints the summary as JSON (without the file list) on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output root (default {DEFAULT_OUT})")
    parser.add_argument("--start", default="2024-01-01", help="first application date, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=60, help="number of days (default 60)")
    parser.add_argument("--applicants-per-day", type=int, default=2000, help="applications per day")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--bias-rate", type=float, default=BIAS["rate"], help="0->1 label flip rate for age band 18-24"
    )
    parser.add_argument("--progress-every", type=int, default=10, help="progress line every N days (0: off)")
    args = parser.parse_args(argv)
    summary = generate(
        args.out,
        args.start,
        args.days,
        args.applicants_per_day,
        args.seed,
        bias_rate=args.bias_rate,
        progress_every=args.progress_every,
    )
    shown = {k: v for k, v in asdict(summary).items() if k != "files"}
    print(json.dumps({**shown, "files": len(summary.files)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
