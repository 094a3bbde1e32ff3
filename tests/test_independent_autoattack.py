"""Our standard AutoAttack against the Adversarial Robustness Toolbox's on a trained robust model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

pytest.importorskip("art", reason="the comparison needs adversarial-robustness-toolbox (the test extra)")

EXAMPLES = 100


@pytest.fixture(scope="module")
def result(robust_cnn, digits16, tmp_path_factory):
    root = tmp_path_factory.mktemp("independent_autoattack")
    robust_cnn.save(root / "model.keras")
    _, _, x, y = digits16
    np.savez(root / "digits.npz", x=x[:EXAMPLES], y=y[:EXAMPLES])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "independent_autoattack_run.py"),
         str(root / "model.keras"), str(root / "digits.npz"), "0.1"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_our_autoattack_is_within_two_points_of_the_toolbox_and_never_weaker(result):
    ours, theirs = result["ours"], result["theirs"]
    # The model is robust enough for the comparison to mean something: neither attack wins
    # on (nearly) everything or (nearly) nothing.
    assert 0.2 < theirs < 0.9, result
    assert abs(ours - theirs) <= 0.02, result
    assert ours <= theirs + 0.02, result
    # Each later component can only lower the running accuracy.
    after = list(result["ours_after_each"].values())
    assert after == sorted(after, reverse=True) and after[-1] == ours
