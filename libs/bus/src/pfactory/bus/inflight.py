"""In-flight bookkeeping of a concurrent subscription: what may be committed, and the load to report."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition


@dataclass
class ConsumerLoad:
    """Live load of one subscription, for a service's ``/ready`` body or a gauge.

    ``subscribe`` sets ``capacity`` and keeps the other fields current; read them, do not write them.
    """

    capacity: int = 1
    """Handler invocations allowed at once (``subscribe(concurrency=...)``)."""
    in_flight: int = 0
    """Handler invocations running now."""
    buffered: int = 0
    """Records fetched before the consumer paused, waiting for a free slot."""
    peak_buffered: int = 0
    """The most records ever buffered at once (bounded by ``capacity``)."""
    rewound: int = 0
    """Records that arrived with the buffer full, given back by rewinding their partition."""
    paused: bool = False
    """True while the consumer's partitions are paused because every slot is taken."""

    @property
    def saturated(self) -> bool:
        """True when no slot is free: new records wait on the broker, not in memory."""
        return self.in_flight >= self.capacity


class _Partition:
    """Offsets of one partition started since its last commit, in order, with whether each finished."""

    def __init__(self) -> None:
        self.pending: dict[int, bool] = {}  # offset -> finished
        self.highest_started = -1
        self.committable: int | None = None


class OffsetTracker:
    """In-order commit tracking: a partition's committable offset never passes an unfinished record.

    With offsets 7 and 8 started and only 8 finished, nothing past 7 is committable; when 7 finishes
    the committable offset becomes 9. A crash therefore redelivers every unfinished record (and the
    finished ones after it), never skips one.
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}

    def partitions(self) -> set[TopicPartition]:
        """Partitions with records started since they were last forgotten."""
        return set(self._partitions)

    def already_started(self, tp: TopicPartition, offset: int) -> bool:
        """True for a record started before: after a rebalance that kept the partition, the
        consumer rewinds to the committed offset and fetches records still running (or done) again."""
        partition = self._partitions.get(tp)
        return partition is not None and offset <= partition.highest_started

    def start(self, tp: TopicPartition, offset: int) -> None:
        """Record that the handler of ``offset`` started."""
        partition = self._partitions.setdefault(tp, _Partition())
        partition.pending[offset] = False
        partition.highest_started = max(partition.highest_started, offset)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` is done (handled or dead-lettered); may advance the committable offset."""
        partition = self._partitions.get(tp)
        if partition is None or offset not in partition.pending:
            return  # the partition was forgotten (revoked) while the handler ran
        partition.pending[offset] = True
        for pending_offset in sorted(partition.pending):
            if not partition.pending[pending_offset]:
                break
            del partition.pending[pending_offset]
            partition.committable = pending_offset + 1

    def committable(self, tp: TopicPartition) -> int | None:
        """The offset to commit for ``tp`` (one past the last record with nothing unfinished before it)."""
        partition = self._partitions.get(tp)
        return None if partition is None else partition.committable

    def forget(self, tp: TopicPartition) -> None:
        """Drop a partition this consumer no longer owns."""
        self._partitions.pop(tp, None)

    def clear(self) -> None:
        """Forget every partition (the consumer stopped)."""
        self._partitions.clear()
