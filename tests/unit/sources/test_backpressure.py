"""Batch sizing (streamkeep.sources._backpressure): rate caps and the PID estimator, no broker."""

from __future__ import annotations

import pytest

from streamkeep.errors import ConfigError
from streamkeep.sources._backpressure import PidRateEstimator, partition_caps
from streamkeep.sources.kafka import PidRateEstimator as PublicPidRateEstimator


def test_public_import_path_is_kept():
    assert PublicPidRateEstimator is PidRateEstimator
    assert PidRateEstimator.__module__ == "streamkeep.sources.kafka"


def test_no_limit_without_caps_or_rates():
    assert partition_caps({"t:0": 10, "t:1": 0}, batch_interval_ms=None) == {"t:0": None, "t:1": None}


def test_fixed_cap_and_rate_take_the_smaller():
    lags = {"t:0": 10_000, "t:1": 5}
    assert partition_caps(lags, batch_interval_ms=2000, max_records=300) == {"t:0": 300, "t:1": 300}
    assert partition_caps(lags, batch_interval_ms=2000, max_rate=100.0) == {"t:0": 200, "t:1": 200}
    assert partition_caps(lags, batch_interval_ms=2000, max_records=150, max_rate=100.0) == {"t:0": 150, "t:1": 150}


def test_estimate_is_shared_by_lag_and_never_below_one():
    caps = partition_caps({"t:0": 900, "t:1": 100, "t:2": 0}, batch_interval_ms=1000, estimate=100.0)
    assert caps == {"t:0": 90, "t:1": 10, "t:2": 1}
    # With a fixed rate too, each partition gets the smaller of the two.
    caps = partition_caps({"t:0": 900, "t:1": 100}, batch_interval_ms=1000, estimate=100.0, max_rate=20.0)
    assert caps == {"t:0": 20, "t:1": 10}


def test_a_rate_needs_the_batch_interval():
    with pytest.raises(ConfigError, match="batch interval"):
        partition_caps({"t:0": 1}, batch_interval_ms=None, max_rate=5.0)


def test_estimator_slows_down_when_processing_falls_behind():
    est = PidRateEstimator(1000, min_rate=10)
    assert est.compute(1000, 1000, 500) is None and est.rate is None  # first batch: 2000 records/s observed
    fast = est.compute(2000, 1000, 500)
    assert fast == pytest.approx(2000.0)
    # Processing slows to 500 records/s and batches queue up: the rate drops, below the processing rate.
    slow = est.compute(3000, 1000, 2000, scheduling_delay_ms=1000)
    assert slow is not None and slow < 500
    assert est.compute(3000, 1000, 2000) is None  # an old batch time is ignored
    assert est.compute(4000, 0, 10) is None  # nothing read: no information


def test_estimator_rate_never_below_min_rate():
    est = PidRateEstimator(1000, min_rate=50)
    est.compute(1000, 10, 1000)
    assert est.compute(2000, 10, 10_000, scheduling_delay_ms=100_000) == 50
