"""A run is never lost, stranded or doubled: a run stopped at every named point of its life
finishes, run again, with the uninterrupted run's figures; damaged files give a resume from an
intact checkpoint or one paragraph; a full disk keeps what was written; a second process is
refused; the package deletes only what it wrote.

The stops are exact, not timed: ``atomic.stop_hook`` raises ``Killed`` (a ``BaseException``,
so nothing of ours catches it and no temporary file is tidied up, as after a kill) at a named
point. ``test_a_real_process_stopped_at_a_point_resumes`` stops a real process there with
``ATALP_TF_STOP_AT``.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from support import PATIENCE
from support import REPO

# Trains runs to stop, damage and resume them.
pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 20  # digits: 1257 training images, 60 a batch


class Killed(BaseException):
    pass


def _config(model_dir, **changes):
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.datasets import DataConfig
    from atalp_tf.training.config import TrainConfig

    values = dict(
        model_dir=str(model_dir), data=DataConfig(name="digits", batch_size=60, image_size=8),
        architecture="resnet18", width=4, method="at_alp", train_attack=PGDConfig(0.1, 0.025, 1),
        eval_attack=PGDConfig(0.1, 0.025, 2), epochs=2, deterministic=True, verbose=2,
    )
    values.update(changes)
    return TrainConfig.from_flat(**values)


def _train(config, stop_at=None, count=1):
    """Runs ``config``; with ``stop_at``, stops it at that point's ``count``-th passing and
    returns None. Returns the results and the lines logged."""
    from atalp_tf import atomic
    from atalp_tf.training import trainer

    passed = {"n": 0}

    def hook(name):
        if name == stop_at:
            passed["n"] += 1
            if passed["n"] == count:
                raise Killed(name)

    lines = []
    atomic.stop_hook = hook if stop_at else None
    try:
        if stop_at:
            with pytest.raises(Killed):
                trainer.run(config, log=lines.append)
            return None, lines
        return trainer.run(config, log=lines.append), lines
    finally:
        atomic.stop_hook = None


def _figures(results):
    return {k: results[k] for k in ("steps", "best_epoch", "test_last", "test_best")}


def _weights(path):
    from atalp_tf.runs.loading import load_classifier

    return load_classifier(str(path)).get_weights()


def _loadable(model_dir):
    """Every model file and JSON file the run holds reads back; no temporary is left."""
    from atalp_tf import atomic

    for folder, _, names in os.walk(model_dir):
        for name in names:
            path = os.path.join(folder, name)
            assert not atomic.is_temporary(name), f"{path} was left behind"
            if name.endswith(".json"):
                json.loads(open(path).read())
            elif name.endswith(".keras"):
                _weights(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, saving every 5 batches (dividing the epoch): ``(results, dir)``.
    How often a run saves does not change what it computes, so runs saving at epoch ends only
    are held to it too."""
    model_dir = tmp_path_factory.mktemp("reference") / "run"
    results, _ = _train(_config(model_dir, checkpoint_steps=5))
    return results, model_dir


# Each stop, then the same command again: the next stop comes later in the run, so one chain
# passes every point. (point, passing, what the rerun must say or do)
CHAIN = [
    ("claimed", 1),  # the configuration is written, nothing else
    ("batch", 7),  # mid-epoch: resumes from the checkpoint at batch 5
    ("write checkpoint", 2),  # a resume's second checkpoint written, the older not yet pruned
    ("write last.keras", 1),  # epoch 1's end: last.keras under its temporary name
    ("write best.keras", 1),
    ("epoch end", 1),  # the model files written, the epoch's checkpoint not yet
    ("write last.keras", 1),  # epoch 2 (the last): its last batch's save was left to its end
    ("test", 1),  # training done: the rerun only tests and saves
    ("write model.keras", 1),
    ("write export", 1),
    ("write results.json", 1),
]


def test_a_run_stopped_at_every_point_finishes_with_the_uninterrupted_figures(tmp_path, reference):
    whole, whole_dir = reference
    config = _config(tmp_path / "run", checkpoint_steps=5)
    for point, count in CHAIN:
        _train(config, point, count)
        assert not os.path.exists(tmp_path / "run" / "results.json"), f"finished after a stop at {point!r}"
    results, lines = _train(config)
    assert results["resumed"] is True
    assert _figures(results) == _figures(whole)
    for a, b in zip(_weights(whole_dir / "model.keras"), _weights(tmp_path / "run" / "model.keras")):
        np.testing.assert_array_equal(a, b)
    _loadable(tmp_path / "run")
    assert os.path.isfile(tmp_path / "run" / "export" / "saved_model.pb")
    assert sorted(os.listdir(tmp_path / "run" / "resume")) == sorted(os.listdir(whole_dir / "resume"))


def test_without_mid_epoch_checkpoints_a_stop_redoes_the_epoch(tmp_path, reference):
    whole, _ = reference
    config = _config(tmp_path / "run")
    # Before the first checkpoint: nothing to keep, the run starts afresh. Then mid-epoch 2:
    # it goes back to epoch 1's end.
    _, _ = _train(config, "write last.keras", 1)
    _, _ = _train(config, "batch", STEPS_PER_EPOCH + 7)
    results, lines = _train(config)
    assert _figures(results) == _figures(whole)
    assert f"  resuming from epoch 2, step {STEPS_PER_EPOCH}" in lines
    _loadable(tmp_path / "run")


def test_a_real_process_stopped_at_a_point_resumes(tmp_path):
    # os._exit at the stop point, as a kill: during the imports nothing is written; during
    # last.keras's write its temporary stays behind, and the next run removes it.
    command = [
        sys.executable, "-m", "atalp_tf.train", f"--flagfile={os.path.join(REPO, 'flags', 'quickstart.cfg')}",
        "--image_size=8", "--width=4", "--attack_steps=1", "--eval_steps=2", "--epochs=1", "--verbose=2",
        f"--model_dir={tmp_path / 'run'}",
    ]
    from atalp_tf import atomic

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", ATALP_TF_STOP_AT="imports")
    stopped = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert stopped.returncode == atomic.STOPPED_EXIT, stopped.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run")
    env["ATALP_TF_STOP_AT"] = "write last.keras"
    stopped = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert stopped.returncode == atomic.STOPPED_EXIT, stopped.stderr[-2000:]
    left = os.listdir(tmp_path / "run" / "checkpoints")
    assert [n for n in left if atomic.is_temporary(n)] and "last.keras" not in left
    del env["ATALP_TF_STOP_AT"]
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] > 0
    _loadable(tmp_path / "run")


def test_free_training_resumes_at_the_right_batch_though_it_steps_twice_per_batch(tmp_path):
    # Free training takes --free_replays optimizer steps per batch; resuming must count batches.
    config = _config(tmp_path / "run", epochs=2, checkpoint_steps=4, attack="free", free_replays=2, export=False)
    _train(config, "batch", STEPS_PER_EPOCH + 11)
    results, lines = _train(config)
    assert f"  resuming from epoch 2, step {STEPS_PER_EPOCH + 8}" in lines
    assert results["resumed"] is True and results["steps"] == 2 * 2 * STEPS_PER_EPOCH
    assert not any(line.startswith("epoch  1/2") for line in lines)
    assert results["catastrophic_overfitting"] is None


def test_weight_averaging_resumes_mid_epoch_to_the_uninterrupted_run(tmp_path):
    # The averages are state like the weights: a stop mid-epoch 2, resumed from batch 25's
    # checkpoint, ends with the uninterrupted run's averaged model and figures.
    whole, _ = _train(_config(tmp_path / "whole", checkpoint_steps=5, ema_momentum=0.9, export=False))
    config = _config(tmp_path / "run", checkpoint_steps=5, ema_momentum=0.9, export=False)
    _train(config, "batch", STEPS_PER_EPOCH + 7)
    results, lines = _train(config)
    assert f"  resuming from epoch 2, step {STEPS_PER_EPOCH + 5}" in lines
    assert _figures(results) == _figures(whole)
    for name in ("model.keras", os.path.join("checkpoints", "best.keras")):
        for a, b in zip(_weights(tmp_path / "whole" / name), _weights(tmp_path / "run" / name)):
            np.testing.assert_array_equal(a, b)
    # model.keras holds the average as its weights.
    from atalp_tf.runs.loading import load_classifier

    final = load_classifier(str(tmp_path / "run" / "model.keras"))
    for variable, average in zip(final._averaged, final.averages):
        np.testing.assert_array_equal(variable.numpy(), average.numpy())


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped mid-epoch 2 with checkpoints at batches 25 and 30 (and epoch 1's end gone)."""
    model_dir = tmp_path_factory.mktemp("stopped") / "run"
    _train(_config(model_dir, checkpoint_steps=5), "batch", STEPS_PER_EPOCH + 12)
    return model_dir


def _copy(stopped_run, tmp_path):
    shutil.copytree(stopped_run, tmp_path / "run")
    return tmp_path / "run"


def _everything(model_dir):
    return sorted(os.path.relpath(os.path.join(f, n), model_dir) for f, _, ns in os.walk(model_dir) for n in ns)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, stopped_run):
    model_dir = _copy(stopped_run, tmp_path)
    newest = model_dir / "resume" / "ckpt-30.data-00000-of-00001"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    # What interrupted TensorFlow writes leave: a temporary folder, data without an index.
    (model_dir / "resume" / "ckpt-31_temp").mkdir()
    (model_dir / "resume" / "ckpt-31_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (model_dir / "resume" / "ckpt-32.data-00000-of-00001").write_bytes(b"x")
    _, lines = _train(_config(model_dir, checkpoint_steps=5), "batch", 1)
    assert any("could not read" in line and "ckpt-30" in line and "ckpt-25" in line for line in lines), lines
    assert "  resuming from epoch 2, step 25" in lines
    # The unreadable one and the leftovers went once the run had started again; the one it
    # resumed from stayed.
    assert sorted(os.listdir(model_dir / "resume")) == ["ckpt-25.data-00000-of-00001", "ckpt-25.index", "data.json"]


@pytest.mark.parametrize("name", ["run_config.json", "resume/data.json", ".atalp_tf.manifest.json"])
def test_a_garbled_state_file_gives_one_paragraph_and_deletes_nothing(tmp_path, stopped_run, name):
    from atalp_tf.errors import UserError

    model_dir = _copy(stopped_run, tmp_path)
    (model_dir / name).write_text('{"trunc')
    before = _everything(model_dir)
    with pytest.raises(UserError) as refused:
        _train(_config(model_dir, checkpoint_steps=5))
    message = str(refused.value)
    assert str(model_dir / name) in message and "damaged" in message and "\n" not in message
    assert _everything(model_dir) == before


def test_a_garbled_split_file_is_one_paragraph(tmp_path):
    from PIL import Image

    from atalp_tf import datasets
    from atalp_tf.errors import DamagedFile

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "split.json").write_text('{"data_dir": "/da')
    config = datasets.DataConfig(name="folder", data_dir=str(tmp_path / "data"), image_size=8, batch_size=2)
    with pytest.raises(DamagedFile, match=f"{tmp_path / 'split.json'} is damaged .* Delete it to draw the split again"):
        datasets.load(config, saved_split=str(tmp_path / "split.json"))


def test_a_damaged_best_model_is_named_when_the_test_reads_it(tmp_path):
    from atalp_tf.errors import ModelFileError

    config = _config(tmp_path / "run", epochs=1, export=False)
    _train(config, "test", 1)
    (tmp_path / "run" / "checkpoints" / "best.keras").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ModelFileError, match="best.keras is not a .keras model file|best.keras is damaged"):
        _train(config)


def test_all_checkpoints_unreadable_is_one_paragraph_that_keeps_them(tmp_path, stopped_run):
    from atalp_tf.errors import DamagedFile

    model_dir = _copy(stopped_run, tmp_path)
    for name in os.listdir(model_dir / "resume"):
        if name.endswith(".index"):
            (model_dir / "resume" / name).write_bytes(b"garbage")
    before = _everything(model_dir)
    with pytest.raises(DamagedFile, match="None of the checkpoints .* can be read.*`overwrite=True`"):
        _train(_config(model_dir, checkpoint_steps=5))
    assert _everything(model_dir) == before


def _mount_tmpfs(path, options):
    """Mounts a tmpfs with ``options`` at ``path``; False where that cannot be done (not root,
    no mount command, a container without the right)."""
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, timeout=PATIENCE).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only), enlarged on demand; else skip."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not _mount_tmpfs(mount, "size=2m"):
        pytest.skip("cannot mount a tmpfs here (needs root): the simulated full disk test covers it")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)

    yield mount, grow
    subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def test_a_full_disk_keeps_what_was_written_and_the_rerun_finishes(small_disk, reference):
    from atalp_tf import atomic

    mount, grow = small_disk
    config = _config(mount / "run", checkpoint_steps=5)
    with pytest.raises(OSError) as full:
        _train(config)
    assert full.value.errno == 28 and atomic.os_error_message(full.value).startswith("Could not write")
    assert not os.path.exists(mount / "run" / "results.json")
    _loadable(mount / "run")  # what is there is whole, and no temporary is left
    grow()
    results, _ = _train(config)
    assert _figures(results) == _figures(reference[0])


def test_a_simulated_full_disk_during_the_export_keeps_the_rest(tmp_path, monkeypatch):
    import errno

    probe = tmp_path / "probe"
    probe.mkdir()
    if _mount_tmpfs(probe, "size=1m"):
        subprocess.run(["umount", "-l", str(probe)], check=False, capture_output=True)
        pytest.skip("a real full disk is tested here: test_a_full_disk_keeps_what_was_written_...")

    import tensorflow as tf

    def full(trackable, path, **kwargs):
        os.makedirs(path)
        open(os.path.join(path, "saved_model.pb"), "wb").write(b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(path, "saved_model.pb"))

    config = _config(tmp_path / "run", epochs=1)
    with monkeypatch.context() as patch:
        patch.setattr(tf.saved_model, "save", full)
        with pytest.raises(OSError):
            _train(config)
    assert not os.path.exists(tmp_path / "run" / "export")
    _loadable(tmp_path / "run")
    results, _ = _train(config)
    assert results["resumed"] and os.path.isfile(tmp_path / "run" / "export" / "saved_model.pb")


@contextlib.contextmanager
def _locked_elsewhere(model_dir):
    """The run directory's lock, held by another process: yields its pid."""
    from atalp_tf.runs.rundir import RunDir

    holder = subprocess.Popen(
        # It holds the lock until the test closes its input, however long the test takes.
        [sys.executable, "-c", "import fcntl, json, os, sys; f = open(sys.argv[1], 'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); json.dump({'pid': os.getpid(), 'since': 'noon', 'command': 'train'}, f); "
         "f.flush(); print('held', flush=True); sys.stdin.read()", str(model_dir / RunDir.LOCK)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_process_is_refused_and_overwrite_never_touches_a_locked_run(tmp_path, stopped_run):
    from atalp_tf.runs.lock import DirectoryInUse

    model_dir = _copy(stopped_run, tmp_path)
    with _locked_elsewhere(model_dir) as pid:
        before = _everything(model_dir)
        for overwrite in (False, True):
            with pytest.raises(DirectoryInUse, match=f"in use by process {pid} \\(train\\) since noon"):
                _train(_config(model_dir, checkpoint_steps=5, overwrite=overwrite))
        assert _everything(model_dir) == before
    # The kernel released the lock with the process: the run resumes.
    _, lines = _train(_config(model_dir, checkpoint_steps=5), "batch", 1)
    assert "  resuming from epoch 2, step 30" in lines


def test_nan_keeps_the_last_checkpoint_whose_weights_gave_a_finite_loss(tmp_path):
    import tensorflow as tf

    from atalp_tf.training.callbacks import TrainingDiverged

    config = _config(tmp_path / "run", checkpoint_steps=1, learning_rate=3.0, schedule="constant")
    with pytest.raises(TrainingDiverged) as stopped:
        _train(config)
    message = str(stopped.value)
    kept = sorted(int(n[5:-6]) for n in os.listdir(tmp_path / "run" / "resume") if n.endswith(".index"))
    assert kept, "no checkpoint was kept"
    assert f"ckpt-{kept[-1]} (epoch 1, step {kept[-1]})" in message
    assert int(message.split("at step ")[1].split(".")[0]) == kept[-1] + 2
    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "resume" / f"ckpt-{kept[-1]}"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), f"{name} in the kept checkpoint is not finite"
    assert not os.path.exists(tmp_path / "run" / "model.keras")


def _ours(config, *, checkpoint=True, finished=False):
    """A run directory as the package leaves it, manifest included, without training."""
    from atalp_tf.runs import rundir

    run = rundir.RunDir(config.model_dir)
    rundir.claim(config, rundir.Plan("new"))
    os.makedirs(run.file("resume"), exist_ok=True)
    if checkpoint:
        open(run.checkpoint_prefix(19) + ".index", "w").close()
    if finished:
        open(run.file("model.keras"), "w").close()
        run.record("evaluation")
        os.makedirs(run.file("evaluation"))
        open(os.path.join(run.file("evaluation"), "evaluation.json"), "w").close()
        open(run.file("results.json"), "w").write(json.dumps({"config": config.flat()}))
    return run


@pytest.mark.parametrize("folder", ["logs", "checkpoints", "evaluation", "notes.txt"])
def test_a_directory_holding_only_a_users_files_is_refused_and_kept(tmp_path, folder):
    from atalp_tf.runs import rundir

    (tmp_path / "run").mkdir()
    target = tmp_path / "run" / folder
    if folder.endswith(".txt"):
        target.write_text("mine")
    else:
        target.mkdir()
        (target / "mine.txt").write_text("mine")
    before = _everything(tmp_path / "run")
    for overwrite in (False, True):
        with pytest.raises(rundir.ModelDirInUse, match=f"holds {folder}, which atalp_tf did not write"):
            rundir.plan(_config(tmp_path / "run", overwrite=overwrite))
    assert _everything(tmp_path / "run") == before


def test_overwrite_removes_only_what_the_package_wrote(tmp_path):
    from atalp_tf.runs import rundir

    config = _config(tmp_path / "run", overwrite=True)
    run = _ours(config, finished=True)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(rundir.ModelDirInUse, match="holds notes.txt, which atalp_tf did not write"):
        rundir.plan(config)
    os.remove(tmp_path / "run" / "notes.txt")
    (tmp_path / "run" / "resume" / "mine.txt").write_text("inside a folder of ours: goes with it")
    chosen = rundir.plan(config)
    assert chosen.action == "replace"
    rundir.claim(config, chosen)
    # What is left is the new run's configuration and the bookkeeping, nothing of the old run.
    assert sorted(os.listdir(run.path)) == [".atalp_tf.manifest.json", "run_config.json"]


def test_a_users_file_beside_an_unfinished_run_stays_through_its_resume(tmp_path):
    from atalp_tf.runs import rundir

    config = _config(tmp_path / "run")
    _ours(config)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    chosen = rundir.plan(config)
    assert chosen.resumes
    rundir.claim(config, chosen)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_a_run_of_an_earlier_version_owns_its_run_files(tmp_path):
    # No manifest: the files a run makes count as its own, beside a garbled TensorFlow state
    # file, which no longer decides whether there is a checkpoint.
    from atalp_tf.runs import rundir

    config = _config(tmp_path / "run", overwrite=True)
    root = tmp_path / "run"
    (root / "resume").mkdir(parents=True)
    (root / "run_config.json").write_text(json.dumps(config.flat()))
    (root / "resume" / "ckpt-19.index").write_text("")
    (root / "resume" / "checkpoint").write_text("\x00garbled")
    assert rundir.plan(config).resumes
    (root / "results.json").write_text(json.dumps({"config": config.flat()}))
    assert rundir.plan(config).action == "replace"


def test_a_run_moved_to_another_directory_resumes_there(tmp_path, stopped_run):
    from atalp_tf.runs import rundir

    model_dir = _copy(stopped_run, tmp_path)
    assert rundir.plan(_config(model_dir, checkpoint_steps=5)).resumes


def test_writing_an_evaluation_into_a_run_takes_its_lock_and_records_it(tmp_path):
    from atalp_tf.runs import rundir
    from atalp_tf.runs.lock import DirectoryInUse

    run = _ours(_config(tmp_path / "run"), finished=True)
    with _locked_elsewhere(tmp_path / "run"):
        with pytest.raises(DirectoryInUse, match="in use by process"):
            with rundir.writing_into(run.file("evaluation_best"), "atalp_tf.evaluate"):
                pass
    # The process holding the lock takes it again (an evaluation written by a training run).
    with run.lock("train"), rundir.writing_into(run.file("evaluation_best"), "atalp_tf.evaluate"):
        os.makedirs(run.file("evaluation_best"))
    assert "evaluation_best" in run.written()


def test_an_unwritable_model_dir_is_one_paragraph(tmp_path):
    from atalp_tf import atomic
    from atalp_tf.training import trainer

    mount = tmp_path / "readonly"
    mount.mkdir()
    if _mount_tmpfs(mount, "ro,size=1m"):
        reason = "read-only"
    elif os.geteuid() != 0:
        mount.chmod(0o555)  # root would write there anyway
        reason = "permission denied"
    else:
        pytest.skip("root without mount: no folder here refuses writes")
    try:
        with pytest.raises(OSError) as refused:
            trainer.run(_config(mount / "run"))
        message = atomic.os_error_message(refused.value)
        assert message and str(mount / "run") in message and reason in message and "\n" not in message
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        mount.chmod(0o755)


def test_the_command_lines_print_a_full_disk_as_one_paragraph(capsys):
    import errno

    from atalp_tf import cli

    def body(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.keras")

    with pytest.raises(SystemExit) as stopped:
        cli.command("atalp_tf.train", body, "")(["train"])
    assert stopped.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("atalp_tf.train: error: Could not write /runs/x/model.keras: the disk is full")
    assert "Traceback" not in error and error.count("\n") == 1
