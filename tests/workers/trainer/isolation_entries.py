"""Entries the launcher tests run in isolation instead of the real trainer job.

Each is ``fn(["run-job", SPEC_URI]) -> exit status`` like ``pfactory.trainer.job:main``, reads its
spec through the same run files, and takes its knobs from ``spec.params``. Run as a module
(``python -m tests.workers.trainer.isolation_entries FN run-job SPEC``) for the pod backend.
Imports stay light: a fresh interpreter (the fake kubelet's) must start them quickly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from pfactory.trainer import runfiles
from pfactory.trainer.jobspec import RunResult, RunSpec


def _spec(argv: list[str]) -> RunSpec:
    assert argv[0] == "run-job", argv
    return runfiles.read_spec(argv[1])


def _finish(spec: RunSpec, *, ok: bool = True, reason: str | None = None, **metrics: Any) -> int:
    result = RunResult(
        job_id=spec.job_id,
        run_id=spec.run_id,
        ok=ok,
        stage="done" if ok else "fit",
        reason=reason,
        params=spec.params,
        metrics=metrics,
    )
    runfiles.write_result(spec.output_uri, result, endpoint_url=spec.feature_store.endpoint_url)
    return 0 if ok else 1


def probe(argv: list[str]) -> int:
    """Succeed, reporting what the run saw of its isolation (in ``result.metrics``)."""
    entered_at = time.monotonic()
    warm = {name: name in sys.modules for name in ("sklearn.ensemble", "pandas", "pyarrow.parquet")}
    spec = _spec(argv)
    print(f"probe {spec.run_id} running in {os.getcwd()}", flush=True)
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

    return _finish(
        spec,
        entered_at=entered_at,
        preloaded=warm,
        pid=os.getpid(),
        pgid=os.getpgid(0),
        sid=os.getsid(0),
        cwd=os.getcwd(),
        tmpdir=tempfile.gettempdir(),
        affinity=sorted(os.sched_getaffinity(0)),
        pool_threads=[pool["num_threads"] for pool in threadpool_info()],
        omp_env=os.environ.get("OMP_NUM_THREADS"),
    )


def fail_with_reason(argv: list[str]) -> int:
    """Fail the way the real job does: a result with a reason, exit status 1."""
    spec = _spec(argv)
    print("about to fail", file=sys.stderr, flush=True)
    return _finish(spec, ok=False, reason=str(spec.params.get("reason", "the labels file has no rows")))


def exit_without_result(argv: list[str]) -> int:
    """Exit with ``params.code`` and write nothing."""
    spec = _spec(argv)
    print("giving up without a result: the disk is full", file=sys.stderr, flush=True)
    code = spec.params.get("code", 3)
    assert isinstance(code, int)
    return code


def segfault(argv: list[str]) -> int:
    """Crash like a native library does."""
    _spec(argv)
    print("about to crash", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
    return 0


def sleep_forever(argv: list[str]) -> int:
    """Never finish (the time-limit and cancellation tests); a grandchild sleeps too."""
    spec = _spec(argv)
    grandchild = subprocess.Popen(["sleep", "600"])
    local = runfiles.local_folder(spec.output_uri)
    if local is not None:
        (local / "pids").write_text(f"{os.getpid()} {grandchild.pid}")
    print(f"sleeping; grandchild {grandchild.pid}", flush=True)
    while True:
        time.sleep(0.05)


def allocate(argv: list[str]) -> int:
    """Allocate ``params.chunk_mb`` MB at a time, every page touched, up to ``params.total_mb``."""
    spec = _spec(argv)
    chunk_mb, total_mb = spec.params.get("chunk_mb", 8), spec.params.get("total_mb", 100_000)
    pause = spec.params.get("pause_s", 0.002)
    assert isinstance(chunk_mb, int) and isinstance(total_mb, int) and isinstance(pause, float | int)
    held = []
    for _ in range(total_mb // chunk_mb):
        block = bytearray(chunk_mb << 20)
        block[::4096] = b"x" * len(range(0, len(block), 4096))
        held.append(block)
        time.sleep(pause)
    return _finish(spec, allocated_mb=len(held) * chunk_mb)


def work_a_little(argv: list[str]) -> int:
    """Fit a tiny scikit-learn model and succeed: the neighbours of a run that runs out of memory."""
    spec = _spec(argv)
    import numpy as np
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    rng = np.random.default_rng(0)
    features = rng.normal(size=(2_000, 5))
    labels = (features[:, 0] > 0).astype(int)
    for _ in range(5):
        LogisticRegression().fit(features, labels)
        time.sleep(0.05)
    return _finish(spec, accuracy=float(LogisticRegression().fit(features, labels).score(features, labels)))


def dispatch(argv: list[str]) -> int:
    """Run the entry named by ``spec.params.behaviour`` (one launcher serves every test)."""
    behaviour = _spec(argv).params.get("behaviour", "probe")
    assert isinstance(behaviour, str)
    code: int = globals()[behaviour](argv)
    return code


def main() -> int:
    """``python -m tests.workers.trainer.isolation_entries FN run-job SPEC``."""
    function = globals()[sys.argv[1]]
    code: int = function(sys.argv[2:])
    return code


if __name__ == "__main__":
    sys.exit(main())
