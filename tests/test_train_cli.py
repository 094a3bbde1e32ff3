"""The train command: flag validation, the flagfiles, and a run that ends in a servable export."""

import dataclasses
import glob
import importlib
import json
import os
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
from support import PATIENCE
from support import REPO

from atalp_tf import choices

QUICKSTART = os.path.join(REPO, "flags", "quickstart.cfg")


def _train(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "atalp_tf.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env=env,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eps=-1"], "flag --eps=-1: expected a value in (0, 1]"),
        (["--eps=8/0"], "flag --eps=8/0: expected a number or fraction"),
        (["--step_size=300/255"], "flag --step_size=300/255: expected a value in (0, 1]"),
        (["--method=foo"], "flag --method=foo: value should be one of"),
        (["--weights=/no/such/file.h5"], "--weights must be 'none', 'imagenet' or an existing file"),
        (["--weights=imagenet"], "--weights needs --architecture=resnet50"),
        (["--architecture=resnet51"], "--architecture must be one of resnet18, resnet50, resnet101, resnet152, or a "
                                      "keras-hub ResNet preset: hub:NAME"),
        (["--architecture=hub:resnet_50_imagenet", "--weights=imagenet"], "a keras-hub preset brings its own weights"),
        (["--batch_size=0"], "flag --batch_size=0: 0 is not a positive integer"),
        (["--schedule=step"], "--schedule=step needs --lr_boundaries"),
        (["--lr_boundaries=150,100", "--schedule=step"], "--lr_boundaries must be increasing"),
        (["--dataset=imagenet21k"], "--dataset must be one of digits, cifar10, flowers17, folder"),
        (["--dataset=folder", "--image_size=32"], "--dataset=flowers17 and --dataset=folder need"),
        (["--dataset=folder", "--data_dir=/no/such/dir", "--image_size=32"], "need an existing --data_dir"),
        (["--dataset=tfds:cifar10", "--image_size=0"], "tfds:NAME need --image_size"),
        (["--split_file=/no/split.json"], "--split_file must be an existing split.json"),
        (["--split_index=4"], "flag --split_index=4: 4 is not an integer in the range [1, 3]"),
        (["--method=standard", "--attack=free"], "--attack=fgsm_rs, free or n_fgsm needs an adversarial --method"),
        (["--attack=fgsm"], "flag --attack=fgsm: value should be one of"),
    ],
)
@pytest.mark.slow
def test_bad_flags_fail_before_any_work_and_name_the_flag(tmp_path, args, message):
    result = _train(f"--flagfile={QUICKSTART}", f"--model_dir={tmp_path / 'run'}", *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "run"), "a refused run must not create its model_dir"


@pytest.mark.slow
def test_missing_model_dir_is_named():
    result = _train("--epochs=1")
    assert result.returncode != 0
    assert "--model_dir" in result.stderr


@pytest.mark.parametrize("flagfile", sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg"))))
def test_every_flagfile_opens_with_its_purpose_and_builds_a_config(flagfile, tmp_path, monkeypatch):
    train = importlib.import_module("atalp_tf.train")  # the command-line module, not atalp_tf.train()

    with open(flagfile) as f:
        first_lines = f.read().split("\n", 2)[:2]
    assert first_lines[0].startswith("# ") and "python -m atalp_tf.train" in first_lines[1]
    monkeypatch.chdir(REPO)  # nested --flagfile paths are relative to the repository root
    argv = ["train", f"--flagfile={flagfile}", f"--model_dir={tmp_path / 'run'}",
            f"--data_dir={tmp_path}"]
    try:
        flags.FLAGS(argv)
        config = train._config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    assert config.objective.method in choices.METHODS
    if choices.OBJECTIVES[config.objective.method].adversarial:
        attack = config.adversary.train_attack
        assert 0 < attack.step_size <= attack.eps * 1.25


@pytest.mark.parametrize("attack, step, steps", [("pgd", 0.25, 7), ("fgsm_rs", 1.25, 1), ("free", 1.0, 1)])
def test_each_training_attack_gets_its_papers_step_size_unless_given(attack, step, steps, tmp_path):
    train = importlib.import_module("atalp_tf.train")  # the command-line module, not atalp_tf.train()

    try:
        flags.FLAGS(["train", f"--model_dir={tmp_path}", f"--attack={attack}", "--eps=8/255"])
        config = train._config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    assert config.adversary.attack == attack and config.adversary.train_attack.steps == steps
    assert config.adversary.train_attack.step_size == pytest.approx(step * 8 / 255)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("quickstart") / "run"
    args = [
        f"--flagfile={QUICKSTART}",
        f"--model_dir={model_dir}",
        "--image_size=8",
        "--width=4",
        "--epochs=2",
        "--attack_steps=2",
        "--eval_steps=3",
        "--verbose=2",
    ]
    result = _train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, args, result


@pytest.mark.slow
def test_run_prints_accuracies_and_writes_checkpoints_logs_and_export(quick_run):
    model_dir, _, result = quick_run
    assert "clean acc" in result.stdout and "PGD acc" in result.stdout
    assert "eps=0.1 (25.5/255)" in result.stdout
    for name in ("checkpoints/last.keras", "checkpoints/best.keras", "model.keras",
                 "export/saved_model.pb", "results.json"):
        assert os.path.exists(model_dir / name), name
    assert glob.glob(str(model_dir / "logs" / "train" / "events.out.tfevents.*"))
    results = json.loads((model_dir / "results.json").read_text())
    for key in ("test_last", "test_best"):
        assert 0.0 <= results[key]["pgd_accuracy"] <= results[key]["clean_accuracy"] <= 1.0
    # Ten classes: two epochs of a tiny model must already beat guessing on clean images.
    assert results["test_last"]["clean_accuracy"] > 0.2


@pytest.mark.slow
def test_a_run_says_what_it_will_do_and_logs_plain_short_lines(quick_run):
    model_dir, _, result = quick_run
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Training at_alp with PGD-2 at eps 0.1, step 0.025, 2 epochs, into ")
    assert lines[1].startswith("  data:  digits, 10 classes (0, 1, 2,")
    assert "train, " in lines[1] and "val, " in lines[1] and "test; 8x8x1" in lines[1]
    assert lines[2].startswith("  model: resnet18 width 4, ") and "trainable parameters" in lines[2]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and "(val " in epochs[0] and " | val " in epochs[0]
    # Into a pipe: no ANSI codes, no carriage-return bars, lines that fit a terminal.
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert max(len(line.replace(str(model_dir), "RUN")) for line in lines) <= 120
    # TensorFlow's start-up lines stay hidden without --verbosity.
    for noise in ("oneDNN", "cuInit", "absl::InitializeLog", "cuda drivers"):
        assert noise not in result.stderr, result.stderr[:2000]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["best_epoch"] in (1, 2)
    assert f"(best: epoch {results['best_epoch']} by validation PGD accuracy" in result.stdout


@pytest.mark.slow
def test_help_groups_the_flags_and_shows_defaults_as_written():
    result = _train("--help")
    assert result.returncode == 0
    text = result.stdout
    headings = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["run:", "data:", "model:", "objective:", "adversary:", "optimizer:", "runtime:"]
    assert "--eps (default 8/255)" in text and "0.0313" not in text
    assert text.index("adversary:") < text.index("--eps (default") < text.index("optimizer:")


@pytest.mark.slow
def test_cheap_mistakes_are_caught_before_training_and_data_errors_are_one_paragraph(tmp_path):
    result = _train(f"--flagfile={QUICKSTART}", f"--model_dir={tmp_path / 'run'}", "--architecture=resnet50")
    assert "--architecture=resnet50 takes images of at least 32x32" in result.stderr, result.stderr[-2000:]
    assert "--image_size=32 or more" in result.stderr
    # A step above eps is allowed but questioned; the data error that follows is one paragraph.
    (tmp_path / "data" / "only_class").mkdir(parents=True)
    result = _train(f"--flagfile={QUICKSTART}", f"--model_dir={tmp_path / 'run'}", "--step_size=1/2",
                    "--dataset=folder", f"--data_dir={tmp_path / 'data'}", "--image_size=16")
    assert result.returncode == 1
    said = [line for line in result.stderr.splitlines() if line.strip()]
    assert said[0].startswith("atalp_tf.train: warning: --step_size=0.5 is larger than --eps=0.1"), said
    assert said[1].startswith("atalp_tf.train: error: ") and "one sub-directory per class" in said[1], said
    assert len(said) == 2 and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run" / "run_config.json")


@pytest.mark.slow
def test_ctrl_c_stops_with_one_line_that_says_how_to_resume(tmp_path):
    import signal

    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    # A suite started in the background of a shell (`cmd &`, nohup) runs with SIGINT ignored,
    # and an ignored signal stays ignored in a child: the run would never see the Ctrl-C and
    # train all its epochs. A handled signal is reset to its default in a child instead, so
    # the run is started while this process handles SIGINT.
    handled = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "atalp_tf.train", f"--flagfile={QUICKSTART}", f"--model_dir={tmp_path / 'run'}",
             "--image_size=8", "--width=4", "--epochs=2000", "--attack_steps=1", "--eval_steps=1", "--verbose=2"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
    finally:
        signal.signal(signal.SIGINT, handled)
    for line in process.stdout:
        if line.startswith("epoch  2/"):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode == 130, stderr[-2000:]
    said = [line for line in stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "The last good checkpoint" in said[0] and "was kept" in said[0]
    assert "run the same command to resume" in said[0]


@pytest.mark.slow
def test_saved_model_cli_calls_the_export(quick_run, tmp_path):
    model_dir, _, _ = quick_run
    images = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    outdir = tmp_path / "out"
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
            "run",
            "--dir", str(model_dir / "export"),
            "--tag_set", "serve",
            "--signature_def", "serving_default",
            "--inputs", f"images={tmp_path / 'images.npy'}",
            "--outdir", str(outdir),
        ],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probabilities = np.load(outdir / "probabilities.npy")
    class_ids = np.load(outdir / "class_ids.npy")
    assert probabilities.shape == (3, 10) and class_ids.shape == (3,)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(class_ids, probabilities.argmax(1))
    assert sorted(os.listdir(outdir)) == ["class_ids.npy", "class_names.npy", "probabilities.npy"]


@pytest.mark.slow
def test_rerun_refuses_to_overwrite_the_run(quick_run):
    model_dir, args, _ = quick_run
    before = (model_dir / "model.keras").stat().st_mtime_ns
    result = _train(*args)
    assert result.returncode != 0
    assert "--model_dir already holds a finished run" in result.stderr
    assert "--overwrite" in result.stderr
    assert (model_dir / "model.keras").stat().st_mtime_ns == before


@pytest.mark.slow
def test_xla_compiled_run_trains(tmp_path):
    result = _train(
        f"--flagfile={QUICKSTART}", f"--model_dir={tmp_path / 'run'}", "--image_size=8",
        "--width=4", "--epochs=1", "--attack_steps=2", "--eval_steps=2", "--verbose=0",
        "--jit_compile",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["jit_compile"] is True
    assert 0.0 <= results["test_last"]["pgd_accuracy"] <= results["test_last"]["clean_accuracy"]
    assert results["steps"] == 19


def _setting_paths(kind, prefix=""):
    """The dotted paths of a config dataclass's settings (``run_config.json``'s keys, the data's
    and the attacks' nested), the nested dataclasses followed."""
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.training.config import AdversarySettings
    from atalp_tf.training.config import TrainConfig

    paths = []
    for field in dataclasses.fields(kind):
        nested = PGDConfig if kind is AdversarySettings and field.name.endswith("_attack") else field.type
        if not dataclasses.is_dataclass(nested):
            paths.append(f"{prefix}{field.name}")
        elif kind is TrainConfig and field.name != "data":
            paths += _setting_paths(nested)  # a group: its settings are flat keys
        else:
            paths += _setting_paths(nested, f"{prefix}{field.name}.")
    return paths


def test_every_setting_has_one_flag_or_says_why_not_and_help_groups_are_the_configs():
    from atalp_tf.training import config
    from atalp_tf.training import options

    given = [field for option in options.OPTIONS for field in option.fields]
    assert len(given) == len(set(given)), "a setting given by two flags"
    assert not set(given) & set(options.INTERNAL)
    assert set(given) | set(options.INTERNAL) == set(_setting_paths(config.TrainConfig))
    assert len(options.FLAG_NAMES) == len(set(options.FLAG_NAMES))
    assert list(options.GROUPS) == ["run", "data", *config.GROUPS]
    for group, kind in config.GROUPS.items():
        names = {field.name for field in dataclasses.fields(kind)}
        assert {f.split(".")[0] for option in options.GROUPS[group] for f in option.fields} <= names, group
    top = {field.name for field in dataclasses.fields(config.TrainConfig)}
    assert all(f.startswith("data.") for option in options.GROUPS["data"] for f in option.fields)
    assert all(f in top for option in options.GROUPS["run"] for f in option.fields)
