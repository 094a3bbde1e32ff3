"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train like one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from support import PATIENCE
from support import REPO

# Runs the package in other processes.
pytestmark = pytest.mark.slow

QUICKSTART = os.path.join(REPO, "flags", "quickstart.cfg")
# One step on a global batch of 1024 (of 1257 training digits). Deterministic attack starts:
# a replica draws noise for its half of the batch, which would differ from one process's
# draw for the whole batch. Synchronised batch norm makes the statistics global, as in one
# process. Even so, the runs are not bit-equal: convolutions on 512 and 1024 images round
# differently, and PGD's sign() turns that into a few flipped perturbation pixels, so the
# two updates differ by about 2% (measured); a gradient scaled by the worker count would
# differ by 100%.
ARGS = [
    f"--flagfile={QUICKSTART}", "--image_size=8", "--width=4", "--attack_steps=2",
    "--eval_steps=2", "--epochs=1", "--batch_size=1024", "--learning_rate=0.5",
    "--norandom_start", "--sync_batchnorm", "--verbose=2",
]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _weights(path):
    from atalp_tf.runs.loading import load_classifier

    return load_classifier(path).get_weights()


def _train(model_dir, *extra, env, tf_config=None):
    if tf_config:
        env = dict(env, TF_CONFIG=json.dumps(tf_config))
    return subprocess.Popen(
        [sys.executable, "-m", "atalp_tf.train", *ARGS, f"--model_dir={model_dir}", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(processes):
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=PATIENCE))
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return outputs


def test_two_workers_match_one_process_and_only_the_chief_writes(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # A zero learning rate leaves the initial weights, against which the updates are compared.
    _finish([
        _train(tmp_path / "initial", "--strategy=default", "--learning_rate=0", env=env),
        _train(tmp_path / "single", "--strategy=default", env=env),
    ])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    # Worker 1 is given a directory of its own: it must leave it untouched.
    outputs = _finish([
        _train(tmp_path / ("multi" if index == 0 else "worker1"), "--strategy=multi_worker",
               env=env, tf_config={"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(2)
    ])

    assert sorted(os.listdir(tmp_path / "multi")) == sorted(os.listdir(tmp_path / "single"))
    assert not os.path.exists(tmp_path / "worker1")
    assert "Export:" in outputs[0][0] and "not the chief" in outputs[1][0]
    results = json.loads((tmp_path / "multi" / "results.json").read_text())
    assert results["steps"] == 1

    initial, single, multi = (
        np.concatenate([w.ravel() for w in _weights(tmp_path / name / "model.keras")])
        for name in ("initial", "single", "multi")
    )
    single_update, multi_update = single - initial, multi - initial
    assert np.linalg.norm(single_update) > 0.1 * np.linalg.norm(initial)
    error = np.linalg.norm(multi_update - single_update) / np.linalg.norm(single_update)
    assert error < 0.1, f"the two-worker update differs from one process's by {error:.1%}"
