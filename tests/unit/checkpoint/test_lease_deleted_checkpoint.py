"""A checkpoint deleted while its driver runs: the driver stops, and never re-creates it.

Found in review: a job left running (a test's checkpoint in its temporary directory, removed at
the test's end; a checkpoint deleted by hand) kept renewing its lease, and the renewal re-created
the deleted directory with a lone ``lease`` file (on S3 the lease object). A heartbeat that finds
no lease now looks for the checkpoint's identity file (one request, only then): when it is gone too,
the driver counts as having lost the checkpoint (its next side effect fails, naming the deletion)
and nothing is written there again. Not writing alone was not enough (second review): on S3 a new
job started on the deleted URL could claim it at once, and the old driver then took it over and
committed into it. A lease deleted alone (an operator "unlocking" a live job) is written again, as
before: until then a second driver could claim without waiting.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import pytest
from _ckpt_jobs import rate_job, wait_for

from streamkeep.checkpoint import Checkpoint
from streamkeep.errors import CheckpointInUseError
from streamkeep.testing import ListSink

DELETED = "was deleted while this driver runs"


def test_a_running_job_whose_checkpoint_is_deleted_stops_and_re_creates_nothing(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = str(tmp_path / "ck")
    ssc = rate_job(url, ListSink(), lease_timeout_s=0.6)()  # a heartbeat every 0.2 s
    try:
        ssc.run(max_batches=1)
        with caplog.at_level(logging.WARNING, logger="streamkeep.checkpoint"):
            shutil.rmtree(url)
            wait_for(lambda: DELETED in caplog.text or os.path.exists(url), 10, "a heartbeat after the deletion")
            assert not os.path.exists(url), f"the heartbeat re-created the deleted checkpoint: {os.listdir(url)}"
        with pytest.raises(CheckpointInUseError, match="was deleted while this driver ran"):
            ssc.run(max_batches=1)
        assert not os.path.exists(url), f"the next batch re-created the deleted checkpoint: {os.listdir(url)}"
    finally:
        ssc.stop()
    assert not os.path.exists(url), f"the stop re-created the deleted checkpoint (its lease released): {os.listdir(url)}"


def test_a_job_whose_local_checkpoint_was_made_anew_by_another_job_does_not_commit_into_it(tmp_path: Any) -> None:
    """Deleted, and a new job started on the path before the old one's heartbeat ran: the flock proves nothing then."""
    url = str(tmp_path / "ck")
    old_sink, new_sink = ListSink(), ListSink()
    old = rate_job(url, old_sink, lease_timeout_s=60.0)()  # no heartbeat within the test: the check is the batch's own
    try:
        old.run(max_batches=3)
        shutil.rmtree(url)
        new = rate_job(url, new_sink, lease_timeout_s=60.0)()
        try:
            new.run(max_batches=1)
            with pytest.raises(CheckpointInUseError, match="was deleted while this driver ran"):
                old.run(max_batches=1)
            new.run(max_batches=1)  # still its own checkpoint
            assert Checkpoint(url).log_seqs() == [1, 2, 3], "the old job wrote into the new job's log"
        finally:
            new.stop()
    finally:
        old.stop()


@pytest.mark.integration
def test_a_driver_whose_s3_checkpoint_was_deleted_does_not_take_over_a_new_job_there(
    s3_server: Any, s3_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    opts = s3_server.storage_options
    old = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)  # a heartbeat every 0.2 s
    old.claim("a", "0")
    for t in (1000, 2000, 3000):
        old.commit({"batch_time": t})
    try:
        with caplog.at_level(logging.WARNING, logger="streamkeep.checkpoint"):
            old.storage.fs.rm(old.storage.root, recursive=True)  # reset by hand while the old job lives
            wait_for(lambda: DELETED in caplog.text or old.storage.exists("lease"), 10, "a heartbeat after the deletion")
            assert not old.storage.exists("lease"), "the heartbeat wrote the deleted checkpoint's lease again"
        new = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)
        new.claim("a", "0")  # a new job on the URL: a fresh checkpoint
        try:
            time.sleep(1.0)  # a few of the old driver's heartbeats, had it kept renewing
            with pytest.raises(CheckpointInUseError, match="was deleted while this driver ran"):
                old.ensure_owner("batch 4000's outputs")
            with pytest.raises(CheckpointInUseError, match="was deleted while this driver ran"):
                old.commit({"batch_time": 4000})
            new.ensure_owner("its first batch")  # still the owner: the old driver wrote nothing over its lease
            assert new.log_seqs() == [1]
        finally:
            new.release()
    finally:
        old.release()


def test_a_heartbeat_during_an_rm_of_the_directory_leaves_no_lease_behind(tmp_path: Any) -> None:
    """`rm -r` may remove the lease before CHECKPOINT and the lock: a beat in between must not write it back."""
    url = str(tmp_path / "ck")
    cp = Checkpoint(url, lease_timeout_s=600.0)  # beats driven by hand below
    cp.claim("a", "0")
    cp.commit({"batch_time": 1000})
    me = cp._owner
    assert me is not None
    try:
        os.remove(os.path.join(url, "lease"))  # the rm has got as far as the lease
        assert cp._renew(me)  # a beat now: still the owner
        assert not os.path.exists(os.path.join(url, "lease")), "a beat wrote the lease back in the middle of the rm"
        for name in os.listdir(url):  # the rm goes on
            path = os.path.join(url, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        os.rmdir(url)
        assert not cp._renew(me)
        with pytest.raises(CheckpointInUseError, match="was deleted while this driver ran"):
            cp.commit({"batch_time": 2000})
        assert not os.path.exists(url)
    finally:
        cp.release()


def test_a_local_lease_deleted_alone_is_written_again_a_beat_later(tmp_path: Any) -> None:
    url = str(tmp_path / "ck")
    cp = Checkpoint(url, lease_timeout_s=600.0)
    cp.claim("a", "0")
    me = cp._owner
    assert me is not None
    try:
        os.remove(os.path.join(url, "lease"))
        assert cp._renew(me) and cp._renew(me)
        assert os.path.exists(os.path.join(url, "lease"))
        cp.commit({"batch_time": 1000})
    finally:
        cp.release()


@pytest.mark.integration
def test_a_new_job_claiming_a_deleted_s3_checkpoint_before_the_old_drivers_heartbeat_keeps_it(s3_server: Any, s3_url: str) -> None:
    """No beat between the deletion and the new claim: the old driver's own checks find the new, shorter log."""
    opts = s3_server.storage_options
    old = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)
    old.claim("a", "0")
    for t in (1000, 2000, 3000):
        old.commit({"batch_time": t})
    try:
        old.storage.fs.rm(old.storage.root, recursive=True)
        new = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=0.6)
        new.claim("a", "0")  # at once
        try:
            time.sleep(1.0)  # the old driver's heartbeats
            with pytest.raises(CheckpointInUseError, match="was deleted while this driver ran"):
                old.commit({"batch_time": 4000})
            new.commit({"batch_time": 1000})  # not fenced out by the old driver
            assert new.log_seqs() == [1, 2]
        finally:
            new.release()
    finally:
        old.release()


@pytest.mark.integration
def test_a_lease_deleted_alone_is_renewed_so_a_second_driver_still_waits_s3(s3_server: Any, s3_url: str) -> None:
    opts = s3_server.storage_options
    owner = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=3.0)  # a heartbeat every 1 s
    owner.claim("a", "0")
    owner.commit({"batch_time": 1000})
    try:
        owner.storage.fs.rm_file(owner.storage.path("lease"))  # an operator "unlocking" a live job
        wait_for(lambda: owner.storage.exists("lease"), 10, "the owner's next heartbeat")
        other = Checkpoint(s3_url, storage_options=opts, lease_timeout_s=3.0)
        with pytest.raises(CheckpointInUseError):
            other.claim("b", "0")
        owner.ensure_owner("batch 2000's outputs")
    finally:
        owner.release()
