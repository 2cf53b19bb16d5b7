"""The experiment grid on Ray: ``--executor ray`` on a local cluster of 2 CPUs started here.

Ray is an optional extra (``pyro-mixup[distributed]``); ``make test`` installs it. The records
must equal the local executor's for the same seed, a worker that dies mid-task must have its task
retried with nothing lost or stored twice, and a resumed run must skip what is done.
"""

import json
import os
import sys

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray", reason="the distributed extra (pip install pyro-mixup[distributed])"
)

from test_bench_cli import tiny_uci  # noqa: E402
from test_bnn import write_uci  # noqa: E402

from pyro_mixup.cli import main  # noqa: E402
from pyro_mixup.experiments.executors import run_tasks  # noqa: E402

# the tasks below are functions of this test module, which Ray's workers cannot import: ship them
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# what differs between two runs of the same configuration: wall times
TIMES = {"seconds", "config_seconds", "fit_seconds", "diagnostics_seconds"}


def test_bench_uci_on_ray_equals_the_local_executor_and_resumes(tmp_path, capsys):
    # first in this file, before the fixture's cluster: the command starts and stops its own
    assert not ray.is_initialized()
    data_dir = tiny_uci(str(tmp_path / "uci"))
    argv = ["bench", "uci", "--data-dir", data_dir, "--splits", "0-1", "--epochs", "4"]
    argv += ["--methods", "erm,probmix,m-probmix", "--alphas", "0.5,1", "--batch-size", "8"]
    argv += ["--test-draws", "20", "--quiet"]
    local, on_ray = str(tmp_path / "local"), str(tmp_path / "ray")
    assert main([*argv, "--out", local, "--jobs", "2"]) == 0
    assert main([*argv, "--out", on_ray, "--executor", "ray", "--jobs", "2"]) == 0
    assert not ray.is_initialized()  # the local cluster it started is stopped
    a, b = _records(os.path.join(local, "uci.json")), _records(os.path.join(on_ray, "uci.json"))
    assert len(a) == 2 * (1 + 2 + 2) and a == b
    # resumed: nothing retrained, nothing duplicated
    capsys.readouterr()
    assert main([*argv, "--out", on_ray, "--executor", "ray"]) == 0
    assert "0 configuration(s) to train" in capsys.readouterr().out
    assert _records(os.path.join(on_ray, "uci.json")) == b


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _die_on_first_attempt(task):
    value, marker = task
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies mid-task, as if killed or out of memory
    return value * value


def test_a_task_whose_worker_dies_is_retried_and_returned_once(cluster, tmp_path):
    tasks = [(v, str(tmp_path / f"attempted-{v}")) for v in (2, 3)]
    got = list(run_tasks(tasks, _die_on_first_attempt, executor="ray"))
    assert sorted(result for _, result in got) == [4, 9]
    assert sorted(task for task, _ in got) == sorted(tasks)  # once each
    assert all(os.path.exists(marker) for _, marker in tasks)  # each died once


def _records(path):
    recs = json.load(open(path))
    return sorted(
        ({k: v for k, v in r.items() if k not in TIMES} for r in recs),
        key=lambda r: (r["method"], r["alpha"], r["split"]),
    )


def test_bnn_on_ray_equals_the_local_executor(cluster, tmp_path):
    write_uci(tmp_path / "uci")
    argv = ["bnn", "--data-dir", str(tmp_path / "uci"), "--dataset", "tiny", "--methods"]
    argv += ["erm,probmix", "--backend", "pyro", "--epochs", "15", "--num-samples", "10"]
    argv += ["--hidden", "4", "--quiet", "--no-plots"]
    for executor in ("local", "ray"):
        assert main([*argv, "--out", str(tmp_path / executor), "--executor", executor]) == 0
    for method in ("erm", "probmix"):
        for k in range(2):
            a, b = (
                json.loads((tmp_path / ex / "tiny" / f"{method}_split{k}.json").read_text())
                for ex in ("local", "ray")
            )
            for key in ("test_nll", "test_rmse", "coverage_90"):
                assert np.isfinite(a[key]) and a[key] == b[key], (method, k, key)
