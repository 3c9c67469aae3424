"""The lease heartbeat never re-creates a checkpoint deleted while its driver runs.

Found in review: a job left running (a test's checkpoint in its temporary directory, removed at
the test's end; a checkpoint deleted by hand) kept renewing its lease, and the renewal re-created
the deleted directory with a lone ``lease`` file (on S3 the lease object). The heartbeat reads the
lease before it writes it anyway: a lease not found now stops the renewal (no extra request per beat),
and on local disks the renewal's write never creates a directory. Nor does the stop, which releases
the lease only while the checkpoint's identity file is there.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import pytest
from _ckpt_jobs import rate_job, wait_for

from streamkeep.checkpoint import Checkpoint
from streamkeep.testing import ListSink

GONE = "its lease file is gone"


def test_a_running_jobs_heartbeat_does_not_re_create_its_deleted_checkpoint(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = str(tmp_path / "ck")
    ssc = rate_job(url, ListSink(), lease_timeout_s=0.6)()  # a heartbeat every 0.2 s
    try:
        ssc.run(max_batches=1)
        with caplog.at_level(logging.WARNING, logger="streamkeep.checkpoint"):
            shutil.rmtree(url)
            wait_for(lambda: GONE in caplog.text or os.path.exists(url), 10, "a heartbeat after the deletion")
            assert not os.path.exists(url), f"the heartbeat re-created the deleted checkpoint: {os.listdir(url)}"
    finally:
        ssc.stop()
    assert not os.path.exists(url), f"the stop re-created the deleted checkpoint (its lease released): {os.listdir(url)}"


@pytest.mark.integration
def test_a_heartbeat_does_not_re_create_a_deleted_checkpoints_lease_s3(s3_server: Any, s3_url: str, caplog: pytest.LogCaptureFixture) -> None:
    cp = Checkpoint(s3_url, storage_options=s3_server.storage_options, lease_timeout_s=0.6)
    cp.claim("a", "0")
    try:
        with caplog.at_level(logging.WARNING, logger="streamkeep.checkpoint"):
            cp.storage.fs.rm(cp.storage.root, recursive=True)
            wait_for(lambda: GONE in caplog.text or cp.storage.exists("lease"), 10, "a heartbeat after the deletion")
            assert not cp.storage.exists("lease"), "the heartbeat wrote the deleted checkpoint's lease again"
    finally:
        cp.release()
