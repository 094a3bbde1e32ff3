"""Surviving faults: SIGKILL and resume, refusing another run's directory, NaN stop, and
loading only what fits."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
from PIL import Image
import pytest
from support import PATIENCE
from support import REPO
from support import wait_until
import tensorflow as tf

QUICKSTART = os.path.join(REPO, "flags", "quickstart.cfg")
# Digits at 8x8: 1257 training images, 64 a batch -> 19 steps an epoch.
TINY = [
    f"--flagfile={QUICKSTART}", "--image_size=8", "--width=4", "--attack_steps=1",
    "--eval_steps=2", "--verbose=2",
]
STEPS_PER_EPOCH = 19


def _command(model_dir, *extra):
    return [sys.executable, "-m", "atalp_tf.train", *TINY, f"--model_dir={model_dir}", *extra]


def _run(model_dir, *extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        _command(model_dir, *extra), cwd=REPO, capture_output=True, text=True, timeout=PATIENCE, env=env
    )


def _latest_step(model_dir):
    from atalp_tf.runs.rundir import RunDir

    steps = RunDir(model_dir).checkpoint_steps()
    return steps[0] if steps else 0


def _kill_after_step(model_dir, step, *extra):
    """Starts a run, SIGKILLs it once a checkpoint past ``step`` exists; returns that step."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        _command(model_dir, *extra), cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _latest_step(model_dir) > step, f"a checkpoint past step {step}", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return _latest_step(model_dir)


def _weights(path):
    from atalp_tf.runs.loading import load_classifier

    return load_classifier(path).get_weights()


@pytest.mark.slow
def test_sigkilled_run_resumes_where_it_stopped_and_matches_an_uninterrupted_run(tmp_path):
    # With augmentation: its draws must also pick up where they stopped.
    extra = ("--epochs=3", "--checkpoint_steps=4", "--deterministic", "--augment=pad_crop")
    reference = _run(tmp_path / "whole", *extra)
    assert reference.returncode == 0, reference.stderr[-2000:]

    killed_at = _kill_after_step(tmp_path / "killed", STEPS_PER_EPOCH + 3, *extra)
    assert STEPS_PER_EPOCH < killed_at < 3 * STEPS_PER_EPOCH
    assert not os.path.exists(tmp_path / "killed" / "results.json")
    resumed = _run(tmp_path / "killed", *extra)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    results = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert results["resumed"] is True
    assert results["steps"] == 3 * STEPS_PER_EPOCH
    # The first epoch finished before the kill and is not run again.
    assert "epoch  1/3" not in resumed.stdout
    killed_epoch = killed_at // STEPS_PER_EPOCH + 1
    assert f"epoch  {killed_epoch}/3" in resumed.stdout
    # It says where it picks up: mid-epoch, the interrupted epoch runs only its remaining steps.
    assert f"  resuming from epoch {killed_epoch}, step {killed_at}" in resumed.stdout

    for a, b in zip(_weights(tmp_path / "whole" / "model.keras"),
                    _weights(tmp_path / "killed" / "model.keras")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _folder(root, classes):
    for part, count in (("train", 6), ("val", 2)):
        for name in classes:
            for i in range(count):
                path = root / part / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (10, 10), (40 * i, 0, 0)).save(path)


@pytest.mark.slow
def test_a_checkpoint_for_another_class_count_is_refused(tmp_path):
    # train/ and val/ trees are the split as they stand (a seeded split would be pinned in
    # split.json), so a class folder added between the runs changes the class count.
    data = tmp_path / "data"
    _folder(data, ["a", "b"])
    extra = ("--dataset=folder", f"--data_dir={data}", "--batch_size=4", "--epochs=3",
             "--checkpoint_steps=1")
    _kill_after_step(tmp_path / "run", 1, *extra)
    _folder(data, ["c"])
    result = _run(tmp_path / "run", *extra)
    assert result.returncode != 0
    assert "was made for 2 classes" in result.stderr and "now has 3 classes" in result.stderr
    assert "Traceback" not in result.stderr


def test_load_classifier_checks_classes_and_shape_and_refuses_code(tmp_path, digits16):
    from atalp_tf.models import backbones
    from atalp_tf.models.classifier import RobustClassifier
    from atalp_tf.runs.loading import load_classifier

    path = str(tmp_path / "m.keras")
    RobustClassifier(backbones.resnet18(10, (16, 16, 1), width=2), method="standard").save(path)
    assert load_classifier(path, num_classes=10, image_shape=(16, 16, 1)) is not None
    with pytest.raises(ValueError, match="classifies 10 classes, but 17 are expected"):
        load_classifier(path, num_classes=17)
    with pytest.raises(ValueError, match=r"takes images of shape \(16, 16, 1\)"):
        load_classifier(path, image_shape=(32, 32, 3))

    # A garbled member of an archive that still opens as a zip: one paragraph, not BadZipFile.
    data = open(path, "rb").read()
    garbled = str(tmp_path / "garbled.keras")
    open(garbled, "wb").write(data[:len(data) // 2] + b"\xff" * 4000 + data[len(data) // 2 + 4000:])
    with pytest.raises(ValueError, match="garbled.keras is damaged .*Bad CRC"):
        load_classifier(garbled)

    inputs = keras.Input((4,))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    unsafe_path = str(tmp_path / "unsafe.keras")
    unsafe.save(unsafe_path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_classifier(unsafe_path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("export") / "run"
    result = _run(model_dir, "--epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    return model_dir


_FRESH_PROCESS = r"""
import sys, numpy as np, tensorflow as tf
assert "atalp_tf" not in sys.modules
model = tf.saved_model.load(sys.argv[1])
print("SIGNATURES", sorted(model.signatures))
print("SHAPE", model.signatures["serving_default"].structured_input_signature[1]["images"].shape)
out = model.signatures["serving_default"](images=tf.random.uniform([3, 8, 8, 1]))
assert out["probabilities"].shape == (3, 10) and out["class_ids"].dtype == tf.int32
raw = model.signatures["serve_uint8"](images=tf.fill([2, 8, 8, 1], tf.constant(255, tf.uint8)))
same = model.signatures["serving_default"](images=tf.ones([2, 8, 8, 1]))
np.testing.assert_allclose(raw["probabilities"], same["probabilities"], rtol=1e-5)
empty = model.signatures["serving_default"](images=tf.zeros([0, 8, 8, 1]))
print("EMPTY", empty["probabilities"].shape, empty["class_ids"].shape)
for name, images in [("size", tf.zeros([1, 16, 16, 1])), ("rank", tf.zeros([8, 8, 1])),
                     ("0-255", tf.fill([1, 8, 8, 1], 200.0)),
                     ("nan", tf.fill([1, 8, 8, 1], float("nan")))]:
    try:
        model.signatures["serving_default"](images=images)
        print("ACCEPTED", name)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        print("REFUSED", name, str(error).replace("\n", " ")[:300])
assert "atalp_tf" not in sys.modules
print("OK")
"""


@pytest.mark.slow
def test_export_serves_float_and_uint8_in_a_process_without_the_package(exported):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(exported / "export")],
        capture_output=True, text=True, timeout=PATIENCE, env=env, cwd="/",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK" in result.stdout
    lines = result.stdout.splitlines()
    # Exactly the documented signatures, declaring the real input shape.
    assert "SIGNATURES ['class_names', 'serve_bytes', 'serve_uint8', 'serving_default']" in lines
    assert "SHAPE (None, 8, 8, 1)" in lines
    assert "EMPTY (0, 10) (0,)" in lines
    refused = {line.split()[1]: line for line in lines if line.startswith("REFUSED")}
    assert not [line for line in lines if line.startswith("ACCEPTED")], result.stdout
    assert set(refused) == {"size", "rank", "0-255", "nan"}
    for wrong in ("size", "rank"):
        assert "not compatible with expected shape [?,8,8,1]" in refused[wrong], refused[wrong]
    assert "images must be float pixels in [0, 1]" in refused["0-255"] and "serve_uint8" in refused["0-255"]
    assert "images must be finite" in refused["nan"]


def _checkpoint_in(model_dir):
    """What an interrupted run leaves in resume/: a checkpoint state file and its index."""
    os.makedirs(os.path.join(model_dir, "resume"), exist_ok=True)
    open(os.path.join(model_dir, "resume", "ckpt-19.index"), "w").close()
    with open(os.path.join(model_dir, "resume", "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-19"\n')


def test_a_run_from_before_the_training_attacks_resumes_with_their_defaults(tmp_path):

    from atalp_tf.datasets import DataConfig
    from atalp_tf.runs import rundir
    from atalp_tf.training.config import TrainConfig

    config = TrainConfig.from_flat(model_dir=str(tmp_path), data=DataConfig(name="digits", batch_size=64))
    older = config.flat()
    for added in ("attack", "free_replays", "overfit_guard"):
        del older[added]
    (tmp_path / "run_config.json").write_text(json.dumps(older))
    _checkpoint_in(tmp_path)
    assert rundir.plan(config).resumes is True
    with pytest.raises(rundir.ModelDirInUse, match="`attack`: pgd then, free now"):
        rundir.plan(config.replace(attack="free"))


@pytest.mark.parametrize("method, resumes", [("at_alp", True), ("trades", False)])
def test_a_run_from_before_bn_batches_resumes_only_if_its_batches_are_unchanged(tmp_path, method, resumes):
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.datasets import DataConfig
    from atalp_tf.runs import rundir
    from atalp_tf.training.config import TrainConfig

    config = TrainConfig.from_flat(
        model_dir=str(tmp_path), data=DataConfig(name="digits", batch_size=64), method=method,
        train_attack=PGDConfig(0.1, 0.025, 2),
    )
    older = config.flat()
    for added in ("bn_batches", "clean_ce_weight", "weight_decay_type"):
        del older[added]
    (tmp_path / "run_config.json").write_text(json.dumps(older))
    _checkpoint_in(tmp_path)
    # Such runs put both halves through batch norm as one batch: "auto" now means the same
    # for at_alp, but separate batches for trades, which must not slip in mid-run.
    if resumes:
        assert rundir.plan(config).resumes is True
    else:
        with pytest.raises(rundir.ModelDirInUse, match="`bn_batches`: joint then, separate now"):
            rundir.plan(config)


def _config(tmp_path, **changes):
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.datasets import DataConfig
    from atalp_tf.training.config import TrainConfig

    values = dict(
        model_dir=str(tmp_path / "run"), data=DataConfig(name="digits", batch_size=128),
        train_attack=PGDConfig(0.1, 0.025, 2), eval_attack=PGDConfig(0.1, 0.025, 2),
    )
    values.update(changes)
    return TrainConfig.from_flat(**values)


def _fake_run(config, *, checkpoint=True, finished=False):
    """A run directory as training leaves it: its config, and a checkpoint or a finished model."""

    root = config.model_dir
    os.makedirs(os.path.join(root, "resume"), exist_ok=True)
    with open(os.path.join(root, "run_config.json"), "w") as f:
        json.dump(config.flat(), f)
    if checkpoint:
        _checkpoint_in(root)
    if finished:
        open(os.path.join(root, "model.keras"), "w").close()
        os.makedirs(os.path.join(root, "evaluation"))
        open(os.path.join(root, "evaluation", "evaluation.json"), "w").close()
        with open(os.path.join(root, "results.json"), "w") as f:
            json.dump({"config": config.flat()}, f)


def test_a_run_that_cannot_start_claims_nothing_and_leftovers_never_block(tmp_path):

    from atalp_tf.datasets import DataConfig
    from atalp_tf.errors import DataError
    from atalp_tf.runs import rundir
    from atalp_tf.training import trainer

    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir()  # empty class folders: the data cannot be read
    data = DataConfig(name="folder", batch_size=8, data_dir=str(tmp_path / "data"), image_size=8)
    broken = _config(tmp_path, data=data)
    with pytest.raises(DataError, match="Class folder"):
        trainer.run(broken)
    assert not os.path.exists(os.path.join(broken.model_dir, "run_config.json"))
    # A directory an older version left with nothing but a configuration does not block the
    # corrected command either: it starts afresh, saying so.
    _fake_run(broken, checkpoint=False)
    plan = rundir.plan(_config(tmp_path))
    assert plan.action == "new" and plan.remove
    assert "stopped before its first checkpoint" in plan.note


def test_overwrite_resumes_an_unfinished_run_and_replaces_a_finished_one_with_its_evaluations(tmp_path):

    from atalp_tf.runs import rundir

    config = _config(tmp_path, overwrite=True)
    _fake_run(config)
    # Repeating a killed --overwrite command must not throw its progress away.
    assert rundir.plan(config).action == "resume"
    _fake_run(config, finished=True)
    plan = rundir.plan(config)
    assert plan.action == "replace" and plan.remove and "evaluation" in plan.note
    lines = []
    rundir.claim(config, plan, lines.append)
    assert lines == [plan.note] and lines[0].startswith("Replacing the finished run")
    assert not os.path.exists(os.path.join(config.model_dir, "evaluation"))
    assert not os.path.exists(os.path.join(config.model_dir, "model.keras"))
    with pytest.raises(rundir.ModelDirInUse, match="finished run"):
        _fake_run(config, finished=True)
        rundir.plan(config.replace(overwrite=False))


def test_another_configuration_is_refused_naming_the_flags_that_differ(tmp_path):
    import dataclasses

    from atalp_tf.attacks import PGDConfig
    from atalp_tf.runs import rundir

    config = _config(tmp_path)
    _fake_run(config)
    other = config.replace(data=dataclasses.replace(config.data, batch_size=8),
                           train_attack=PGDConfig(8 / 255, 2 / 255, 2))
    with pytest.raises(rundir.ModelDirInUse) as refused:
        rundir.plan(other)
    message = str(refused.value)
    assert "`batch_size`: 128 then, 8 now" in message
    assert "`eps`: 0.1 then, 8/255 now" in message and "`step_size`: 0.025 then, 2/255 now" in message
    assert "{" not in message and "data:" not in message  # flags, not internal dicts


def test_last_and_best_are_attacked_from_the_same_random_starts(standard_model, digits16):
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.training import trainer

    _, _, x, y = digits16
    dataset = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(32)
    standard_model.eval_attack = PGDConfig(0.05, 0.0125, 3)
    try:
        first = trainer.evaluate(standard_model, dataset, seed=0)
        standard_model.seed_generator.next()  # the generator moved on, as training moves it
        again = trainer.evaluate(standard_model, dataset, seed=0)
    finally:
        standard_model.eval_attack = None
    assert first == again
