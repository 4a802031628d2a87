"""Adaptive micro-batching: concurrent small requests to one version share one prediction.

A model's fixed cost per call (sklearn validates and introspects the frame at every pipeline step:
about 3 ms for a one-row ``Pipeline.predict_proba`` with scikit-learn 1.9) dwarfs the cost of a
row, so the rows of requests that arrive together are scored in one call.

No timer paces it. The first request for an idle version schedules a flush on the event loop
(``call_soon``); the flush takes every pending request once :data:`QUIET_TURNS` turns of the loop
in a row brought no new one (a lone request waits a few microseconds), the oldest has waited
:data:`MAX_WAIT_S`, or ``max_rows`` rows are pending. Under load, requests that arrive while a
batch predicts form the next one, so batches grow with the load and shrink back when it falls;
waiting for the quiet turns keeps the requests that arrive in one burst in one batch (flushing
at the first turn splits 16 concurrent callers into two alternating halves and doubles the model
calls).

A batch that fails is scored again request by request, so one bad request fails alone with its
own error and the others get their answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("pfactory.scorer.online")

QUIET_TURNS = 2
"""Turns of the event loop without a new request after which the pending ones are scored."""
MAX_WAIT_S = 0.002
"""The longest a request waits for others to join its batch while they keep arriving."""

Scores = tuple[list[float], list[Any]]
"""One score and one label per row (labels are None where the model has no classes)."""


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    answer: asyncio.Future[Scores]
    since: float


@dataclass
class BatchStats:
    """What a batcher has done: model calls, requests and rows answered, the largest batch."""

    predictions: int = 0
    requests: int = 0
    rows: int = 0
    largest_batch_requests: int = 0
    retried_alone: int = 0


class PredictionBatcher:
    """Queues checked rows of one served version and scores every pending request in one call.

    Runs on the event loop that calls :meth:`submit`; ``score`` runs there too (callers send large
    requests to a thread themselves, so a batch holds at most ``max_rows`` rows of small ones).
    """

    def __init__(self, score: Callable[[list[dict[str, Any]]], Scores], max_rows: int) -> None:
        """Batch the calls to ``score``.

        Args:
            score: scores and labels of rows (rows that passed the signature check), one per row.
            max_rows: the most rows one call gets; a single larger request is still scored alone.
        """
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1; got {max_rows}")
        self._score, self.max_rows = score, max_rows
        self._pending: deque[_Pending] = deque()
        self._flush_scheduled = False
        self._arrivals = self._seen = self._quiet_turns = 0
        self._pending_rows = 0
        self.stats = BatchStats()

    def submit(self, rows: list[dict[str, Any]]) -> asyncio.Future[Scores]:
        """Queue ``rows``; the future gets their scores and labels, or the error of scoring them alone.

        Args:
            rows: one request's rows, already checked against the signature.

        Returns:
            A future of one score and one label per row, in order.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Scores] = loop.create_future()
        self._pending.append(_Pending(rows, answer, loop.time()))
        self._arrivals += 1
        self._pending_rows += len(rows)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return answer

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()  # wait while the queue grows, within the bounds
        self._quiet_turns = 0 if self._arrivals != self._seen else self._quiet_turns + 1
        self._seen = self._arrivals
        if (
            self._quiet_turns < QUIET_TURNS
            and self._pending_rows < self.max_rows
            and self._pending
            and loop.time() - self._pending[0].since < MAX_WAIT_S
        ):
            loop.call_soon(self._flush)
            return
        self._flush_scheduled = False
        self._quiet_turns = 0
        batch: list[_Pending] = []
        rows = 0
        while self._pending:
            head = self._pending[0]
            if head.answer.done():  # the caller went away (its task was cancelled)
                self._pending.popleft()
                self._pending_rows -= len(head.rows)
                continue
            if batch and rows + len(head.rows) > self.max_rows:
                break
            batch.append(self._pending.popleft())
            rows += len(head.rows)
        self._pending_rows -= rows
        if self._pending:  # the rest after other callbacks had their turn
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if batch:
            self._run(batch, rows)

    def _run(self, batch: list[_Pending], rows: int) -> None:
        stats = self.stats
        stats.requests += len(batch)
        stats.rows += rows
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(batch))
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        stats.predictions += 1
        try:
            scores, labels = self._score([row for pending in batch for row in pending.rows])
            if len(scores) != rows or len(labels) != rows:
                raise RuntimeError(f"the model answered {len(scores)} scores for {rows} rows")
        except Exception as error:  # one request's rows may be at fault: find whose
            log.debug("a batch of %d requests failed (%r); scoring them one by one", len(batch), error)
            stats.retried_alone += len(batch)
            for pending in batch:
                self._run_alone(pending)
            return
        start = 0
        for pending in batch:
            end = start + len(pending.rows)
            if not pending.answer.done():
                pending.answer.set_result((scores[start:end], labels[start:end]))
            start = end

    def _run_alone(self, pending: _Pending) -> None:
        self.stats.predictions += 1
        try:
            answer = self._score(pending.rows)
        except Exception as error:
            if not pending.answer.done():
                pending.answer.set_exception(error)
            return
        if not pending.answer.done():
            pending.answer.set_result(answer)
