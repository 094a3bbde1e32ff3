"""The evaluate command: flag errors, model locations, and a full run that writes its reports."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from support import PATIENCE
from support import REPO

from atalp_tf.runs import rundir as runs


def _run(*args, env=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "atalp_tf.evaluate", *args],
        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE, env=env,
    )


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--steps=10,0", "--steps must be positive integers"),
        ("--attacks=pgd,cw", "--attacks must name attacks from fgsm"),
        ("--eps=8/255,2", "flag --eps=8/255,2: expected a value in (0, 1]"),
        ("--restarts=0", "--restarts"),
        ("--dataset=nonsense", "--dataset must be one of digits, cifar10, flowers17, folder, or tfds:NAME"),
    ],
)
@pytest.mark.slow
def test_bad_flags_fail_fast_naming_the_flag(tmp_path, flag, message):
    (tmp_path / "m.keras").write_bytes(b"")
    result = _run(f"--model={tmp_path / 'm.keras'}", flag)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.slow
def test_a_missing_model_is_named(tmp_path):
    result = _run(f"--model={tmp_path / 'nothing.keras'}")
    assert result.returncode != 0 and "--model must be an existing" in result.stderr


def test_locate_finds_the_model_of_each_form(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "export").mkdir()
    (run / "export" / "saved_model.pb").write_bytes(b"")
    for name in ("run_config.json", "model.keras", "checkpoints/best.keras"):
        (run / name).write_text("{}")
    assert runs.locate(str(run)) == runs.Located(str(run / "model.keras"), str(run))
    assert runs.locate(str(run), "best").model_file == str(run / "checkpoints" / "best.keras")
    assert runs.locate(str(run / "checkpoints" / "best.keras")).run_dir == str(run)
    assert runs.locate(str(run / "export")).model_file == str(run / "model.keras")
    with pytest.raises(FileNotFoundError, match="checkpoints/last.keras"):
        runs.locate(str(run), "last")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "saved_model.pb").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="attacks need logits"):
        runs.locate(str(bare))
    with pytest.raises(FileNotFoundError, match="neither a .keras file"):
        runs.locate(str(tmp_path))


@pytest.mark.slow
def test_a_run_writes_table_json_csv_and_figure_and_keeps_them(standard_model, source_model, tmp_path):
    target, source = tmp_path / "target.keras", tmp_path / "source.keras"
    standard_model.save(target)
    source_model.save(source)
    out = tmp_path / "evaluation"
    args = [
        f"--model={target}", f"--source_model={source}", "--dataset=digits", "--image_size=16",
        "--num_examples=40", "--batch_size=20", "--eps=4/255,8/255", "--steps=2,5",
        "--attacks=fgsm,pgd,apgd_ce,square", "--queries=30", f"--out_dir={out}",
    ]
    result = _run(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "worst case per example at eps 0.03137 (8/255)" in result.stdout
    assert "checks: " in result.stdout
    with open(out / "evaluation.json") as f:
        saved = json.load(f)
    assert saved["num_examples"] == 40 and saved["source_model"] == str(source)
    names = [a["name"] for a in saved["attacks"]]
    assert "apgd_ce-5 eps=8/255" in names and "transfer pgd-5 eps=4/255" in names
    assert len(saved["checks"]) == 9 and isinstance(saved["warnings"], list)
    worst = {round(w["eps_255"]): w["accuracy"] for w in saved["worst_case"]}
    assert worst[8] <= min(a["accuracy"] for a in saved["attacks"] if round(a["eps_255"]) == 8)
    # Per example: which attacks broke it; the worst case is the share that none broke.
    examples = saved["examples"]
    assert len(examples) == 40 and set(examples[0]["broken_by"]) == {"4/255", "8/255"}
    assert np.mean([e["robust"]["8/255"] for e in examples]) == pytest.approx(worst[8])
    assert all(not e["robust"]["8/255"] for e in examples if e["broken_by"]["8/255"])
    assert any("transfer" in name for e in examples for name in e["broken_by"]["8/255"])
    with open(out / "evaluation.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["name"] == "clean" and len(rows) == 1 + len(names) + 2
    with Image.open(out / "accuracy_vs_iterations.png") as png:
        assert png.size[0] > 100
    # A second run does not replace the first one's files unless asked.
    before = (out / "evaluation.json").read_text()
    again = _run(*args)
    assert again.returncode == 1 and "pass --overwrite" in again.stderr
    assert (out / "evaluation.json").read_text() == before


_DEFENCE = """
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="user_defence")
class Quantize(keras.layers.Layer):
    \"\"\"Rounds pixels to 8 levels: its gradient is zero almost everywhere.\"\"\"

    def call(self, x):
        return tf.round(x * 7.0) / 7.0
"""


@pytest.mark.slow
def test_a_model_with_a_user_layer_loads_with_import_and_bpda_sees_through_it(robust_cnn, tmp_path):
    import keras

    (tmp_path / "user_defence.py").write_text(_DEFENCE)
    import importlib
    import sys as _sys

    _sys.path.insert(0, str(tmp_path))
    try:
        defence = importlib.import_module("user_defence")
    finally:
        _sys.path.remove(str(tmp_path))
    inputs = keras.Input((16, 16, 1))
    logits = robust_cnn.backbone(defence.Quantize(name="quantize")(inputs))["logits"]
    keras.Model(inputs, logits).save(tmp_path / "defended.keras")
    common = [f"--model={tmp_path / 'defended.keras'}", "--dataset=digits", "--image_size=16",
              "--num_examples=60", "--eps=0.1", "--steps=10", "--attacks=pgd"]
    env = {"PYTHONPATH": str(tmp_path)}
    refused = _run(*common, f"--out_dir={tmp_path / 'a'}", env=env)
    assert refused.returncode == 1 and "--import=MODULE" in refused.stderr
    assert "Traceback" not in refused.stderr
    results = {}
    for name, extra in (("masked", []), ("bpda", ["--bpda=quantize"])):
        run = _run(*common, "--import=user_defence", *extra, f"--out_dir={tmp_path / name}", env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        with open(tmp_path / name / "evaluation.json") as f:
            results[name] = json.load(f)
    # Through the rounding, PGD's gradient is zero and it finds nothing; the checks say so.
    assert "zero_gradients" in results["masked"]["warnings"]
    assert "zero_gradients" not in results["bpda"]["warnings"]
    masked, bpda = (results[n]["attacks"][0]["accuracy"] for n in ("masked", "bpda"))
    assert bpda < masked - 0.1, (masked, bpda)


@pytest.mark.slow
def test_a_run_directory_sets_the_eps_and_the_command_reports_as_it_goes(standard_model, tmp_path):
    # A run directory as training leaves it: the model, and the configuration it trained with.
    run = tmp_path / "run"
    run.mkdir()
    standard_model.save(run / "model.keras")
    config = {"data": {"name": "digits", "batch_size": 64, "image_size": 16},
              "train_attack": {"eps": 0.05, "step_size": 0.0125, "steps": 7}}
    (run / "run_config.json").write_text(json.dumps(config))
    result = _run(f"--model={run}", "--num_examples=60", "--batch_size=30", "--steps=3",
                  "--attacks=fgsm,pgd", f"--out_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("eps 0.05 (12.75/255) (the eps the run trained at")
    # An estimate before the work, each attack with its time, then a line per later batch.
    assert any(line.startswith("2 attacks on 2 batch(es) of up to 30 examples: about ") for line in lines)
    assert sum("on the first batch (" in line for line in lines) == 2
    assert any(line.startswith("batch 1/2 done") for line in lines)
    # Checks whose attacks did not run say so; they are not "ok".
    assert "[not run] black_box_beats_gray_box: not run: it needs a black-box attack" in result.stdout
    assert "[not run] accuracy_rises_with_eps" in result.stdout
    assert "[ok] accuracy_rises_with_eps" not in result.stdout
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved["attacks"][0]["eps"] == 0.05
