"""One Ray instance per test session, bound to loopback (``ray_address``), for tests marked ``ray``.

Started in the pytest process on first use (``ray.init``: a head node whose owner is
this process, stopped at the end of the session), with every address on 127.0.0.1
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray otherwise takes the first interface's
address), no dashboard, no usage stats, no token auth (child drivers of the fault tests
connect to it by address). Its workers import test modules by name (Ray pickles
functions of importable modules by reference), so they get this process's sys.path.
"""

from __future__ import annotations

import os
import sys

import pytest

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="session")
def ray_address():
    """The GCS address ("127.0.0.1:port") of the session's Ray; this process is connected to it."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    ray = pytest.importorskip("ray")
    saved = os.environ.get("PYTHONPATH")
    paths = [p for p in sys.path if p and os.path.isdir(p) and "site-packages" not in p and "lib/python" not in p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *(saved.split(os.pathsep) if saved else [])]))
    try:
        if not ray.is_initialized():
            from streamkeep.executors.ray import _loopback_only

            _loopback_only(ray)
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                configure_logging=False,
            )
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    address = ray.get_runtime_context().gcs_address
    yield address
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_executor(ray_address):
    """A RayExecutor with 2 key partitions on the session's Ray, its actors kept between jobs (each takes seconds to start)."""
    from streamkeep.executors import RayExecutor

    ex = RayExecutor(num_partitions=2, keep_actors=True)
    yield ex
    ex.shutdown()


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request):
    """Each executor: "local", and the session's `ray_executor` (2 key partitions)."""
    if request.param == "local":
        return "local"
    return request.getfixturevalue("ray_executor")
