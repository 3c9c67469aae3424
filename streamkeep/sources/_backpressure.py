"""Batch sizing for sources that read a backlog: rate limits and adaptive backpressure.

Owns :class:`PidRateEstimator` (Spark's ``backpressure.enabled`` rate
estimator; its public path is ``streamkeep.sources.kafka.PidRateEstimator``)
and :func:`partition_caps`, which turns a fixed per-partition rate, a
whole-source estimate and a per-batch record cap into one record cap per
partition. Pure computation: no I/O, no clock, no client library.

Imports only ``streamkeep.errors``; must not import sinks, dstream, the
scheduler or executors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from streamkeep.errors import ConfigError

__all__ = ["PidRateEstimator", "partition_caps"]


class PidRateEstimator:
    """Spark's PID rate estimator: how many records/s the job can process.

    After each batch, ``compute`` compares the rate the job actually processed
    (records / processing time) with the rate it last allowed and corrects the
    allowed rate with a proportional term (the difference), an integral term
    (the scheduling delay, i.e. the backlog of waiting batches, expressed as a
    rate) and a derivative term (change of the difference). The first call only
    records the observed processing rate; later calls return the new rate,
    never below ``min_rate``.

    Args:
        batch_interval_ms: the job's batch interval.
        proportional, integral, derivative: PID gains (Spark's defaults 1, 0.2, 0).
        min_rate: lower bound for the estimate, records/s over the whole source.

    Raises:
        ConfigError: a non-positive interval or min_rate, or a negative gain.

    Example:
        >>> est = PidRateEstimator(1000, min_rate=10)
        >>> est.compute(1000, records=500, processing_ms=500)  # first batch: observed only
        >>> est.rate is None
        True
        >>> est.compute(2000, records=500, processing_ms=500)
        1000.0
        >>> est.rate
        1000.0
    """

    def __init__(
        self, batch_interval_ms: int, *, proportional: float = 1.0, integral: float = 0.2, derivative: float = 0.0, min_rate: float = 100.0
    ) -> None:
        if batch_interval_ms <= 0 or min_rate <= 0 or proportional < 0 or integral < 0 or derivative < 0:
            msg = (
                "PidRateEstimator needs batch_interval_ms > 0, min_rate > 0 and "
                f"non-negative gains; got {batch_interval_ms=}, {min_rate=}, "
                f"{proportional=}, {integral=}, {derivative=}"
            )
            raise ConfigError(msg)
        self.batch_interval_ms = batch_interval_ms
        self.proportional = proportional
        self.integral = integral
        self.derivative = derivative
        self.min_rate = min_rate
        self._first = True
        self._latest_time = -1
        self._latest_rate = -1.0
        self._latest_error = -1.0
        self._estimated = False  # compute() has returned a rate

    @property
    def rate(self) -> float | None:
        """The current estimate in records/s, or None before the second observation."""
        return self._latest_rate if self._estimated else None

    def compute(self, time_ms: int, records: int, processing_ms: float, scheduling_delay_ms: float = 0.0) -> float | None:
        """Feed one finished batch; return the new rate (records/s) or None."""
        if time_ms <= self._latest_time or records <= 0 or processing_ms <= 0:
            return None
        processing_rate = records / processing_ms * 1000.0
        if self._first:
            self._latest_time = time_ms
            self._latest_rate = processing_rate
            self._latest_error = 0.0
            self._first = False
            return None
        since_update_s = (time_ms - self._latest_time) / 1000.0
        error = self._latest_rate - processing_rate
        historical_error = scheduling_delay_ms * processing_rate / self.batch_interval_ms
        d_error = (error - self._latest_error) / since_update_s
        new_rate = max(
            self._latest_rate - self.proportional * error - self.integral * historical_error - self.derivative * d_error, self.min_rate
        )
        self._latest_time = time_ms
        self._latest_rate = new_rate
        self._latest_error = error
        self._estimated = True
        return new_rate


def partition_caps(
    lags: Mapping[str, int],
    *,
    batch_interval_ms: int | None,
    max_records: int | None = None,
    max_rate: float | None = None,
    estimate: float | None = None,
) -> dict[str, int | None]:
    """The most records each partition may contribute to one batch (None: no limit).

    A partition's cap is the smallest of ``max_records``, ``max_rate`` x the
    batch interval, and its share of ``estimate`` (records/s over the whole
    source, split in proportion to each partition's lag) x the batch interval.
    A rate-based cap is never below 1, so every partition with a backlog moves.

    Args:
        lags: records waiting per partition key.
        batch_interval_ms: the job's batch interval; needed only when a rate
            (``max_rate`` or ``estimate``) applies.
        max_records: fixed cap per partition and batch.
        max_rate: records/s per partition.
        estimate: records/s for the whole source (from a PidRateEstimator).

    Raises:
        ConfigError: a rate applies but the batch interval is unknown.

    Example:
        >>> partition_caps({"t:0": 900, "t:1": 100}, batch_interval_ms=2000, estimate=100.0)
        {'t:0': 180, 't:1': 20}
    """
    caps: dict[str, int | None] = dict.fromkeys(lags, max_records)
    if max_rate is None and estimate is None:
        return caps
    if batch_interval_ms is None:
        msg = "a rate limit or backpressure needs the batch interval; the scheduler must call set_batch_interval_ms()"
        raise ConfigError(msg)
    secs = batch_interval_ms / 1000.0
    total_lag = sum(lags.values())
    for key, lag in lags.items():
        rate = max_rate
        if estimate is not None and total_lag > 0:
            share = estimate * lag / total_lag
            rate = share if rate is None else min(rate, share)
        if rate is not None:
            limit = max(1, math.floor(rate * secs))
            cur = caps[key]
            caps[key] = limit if cur is None else min(cur, limit)
    return caps
