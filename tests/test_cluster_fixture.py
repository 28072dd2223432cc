"""The two-node Ray cluster fixture: tasks run on both nodes, and nothing is left behind."""

import json
import os
import subprocess
import sys

import pytest

from tests import cluster_fixture
from tests.cluster_fixture import two_node_ray  # noqa: F401  (pytest fixture)

# A separate driver process: connects with what the fixture exported to os.environ.
DRIVER = r"""
import json, sys, time
import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
def where():
    time.sleep(1)
    return ray.get_runtime_context().get_node_id()

refs = [
    where.options(resources={"node:__internal_head__": 0.01}).remote(),  # the head node
    where.options(resources={"node2": 0.01}).remote(),  # the second node
]
ids = ray.get(refs, timeout=60)
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
ray.shutdown()
print(json.dumps({"ids": ids, "alive": alive}))
"""


@pytest.fixture
def after_cluster_exit():
    """Requested before ``two_node_ray``, so its teardown runs after the cluster's."""
    seen = {}
    yield seen
    temp_dir = seen["temp_dir"]
    assert cluster_fixture.processes_mentioning(temp_dir) == []
    assert not os.path.exists(temp_dir)
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ or os.environ["RAY_AUTH_TOKEN_PATH"] != seen["token_path"]


@pytest.mark.slow
def test_two_node_cluster_runs_a_task_on_each_node(after_cluster_exit, two_node_ray):
    info = cluster_fixture.cluster_info(two_node_ray)
    after_cluster_exit.update(temp_dir=info.temp_dir, token_path=info.token_path)
    assert two_node_ray.startswith("127.0.0.1:")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == info.token_path
    assert info.token_path.startswith(info.temp_dir)
    assert cluster_fixture.processes_mentioning(info.temp_dir)  # the cluster is up

    out = subprocess.run(
        [sys.executable, "-c", DRIVER, two_node_ray],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["alive"]) == 2
    assert len(set(result["ids"])) == 2
    assert set(result["ids"]) == set(result["alive"])
