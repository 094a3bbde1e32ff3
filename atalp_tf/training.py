"""One training run, from a ``TrainConfig`` to checkpoints, logs, metrics and a SavedModel.

The command line (``atalp_tf.train``) only turns flags into a ``TrainConfig``; everything
else lives here so it can be called from Python and tested without a subprocess.

Files written in ``model_dir`` (by the chief only, under a multi-worker strategy), once the
run can start (data read, model built, weights loaded):

* ``run_config.json``: the configuration; an unfinished run with the same one resumes (with
  or without ``overwrite``), one with another is refused unless ``overwrite``, and a run that
  never reached a checkpoint is simply started afresh (``plan_model_dir``);
* ``split.json``: the split drawn from the seed, for file datasets without an official one;
* ``resume/``: TensorFlow checkpoints (weights, optimizer, attack seed, best score) every
  ``checkpoint_steps`` steps and at each epoch's end; a killed run started again with the
  same command continues from the last one, at the same epoch, step and data position;
* ``checkpoints/last.keras`` after every epoch, ``checkpoints/best.keras`` at the best
  validation PGD accuracy (robust overfitting makes the two differ; both are reported);
* ``logs/`` for TensorBoard;
* ``model.keras`` (the final model) and ``export/`` (SavedModel for serving);
* ``results.json``: the config, the best epoch and the test accuracies of the last and best
  models (both attacked from the same random starts).
"""

import dataclasses
import json
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from atalp_tf import backbones
from atalp_tf import choices
from atalp_tf import datasets
from atalp_tf import guards
from atalp_tf import optimization
from atalp_tf import pixels
from atalp_tf import progress
from atalp_tf.attacks import PGDConfig
from atalp_tf.errors import DataError
from atalp_tf.errors import Interrupted
from atalp_tf.errors import UserError
from atalp_tf.export import export_serving
from atalp_tf.model import RobustClassifier
from atalp_tf.model import resolve_bn_batches

# What runs made before a setting existed did, where that differs from the setting's default.
_LEGACY = {"bn_batches": "joint"}
# Settings that may change between a run and its resumption: how it runs, not what it learns.
_RESUMABLE_CHANGES = (
    "overwrite", "verbose", "strategy", "tpu", "checkpoint_steps", "jit_compile", "export",
    "val_steps", "validate_every", "val_examples",
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs. Pixel quantities (eps, step sizes) are in [0, 1] units."""

    model_dir: str
    data: datasets.DataConfig
    num_classes: int | None = None  # when given, the dataset must have this many classes
    architecture: str = "resnet18"
    width: int = 64
    weights: str | None = None
    method: str = "at_alp"
    alpha: float = 0.5
    beta: float = 1.0
    trades_beta: float = 6.0
    train_attack: PGDConfig | None = None
    attack: str = "pgd"  # how training makes adversarial examples: choices.TRAIN_ATTACKS
    free_replays: int = 4
    clean_ce_weight: float = 0.0  # share of clean CE in alp, at and at_alp (Kannan et al.: 0.5)
    bn_batches: str = "auto"  # choices.BN_BATCHES; auto: separate for trades, joint otherwise
    overfit_guard: str = "auto"  # "auto": "stop" for fgsm_rs and free, "off" for pgd
    eval_attack: PGDConfig | None = None
    epochs: int = 10
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    weight_decay_type: str = "decoupled"  # choices.WEIGHT_DECAY_TYPES; the PyTorch recipes': l2
    schedule: str = "cosine"
    lr_boundaries: tuple = ()
    lr_decay: float = 0.1
    precision: str = "float32"
    jit_compile: bool = False
    strategy: str = "auto"
    tpu: str | None = None
    synchronized_bn: bool = False
    seed: int = 0
    deterministic: bool = False
    checkpoint_steps: int = 0  # 0: at the end of each epoch only
    # Validation (best epoch, overfitting guard): PGD with val_steps steps (None: eval_attack's),
    # every validate_every epochs and at the last, on val_examples of the split (None: all).
    val_steps: int | None = None
    validate_every: int = 1
    val_examples: int | None = None
    overwrite: bool = False
    verbose: int | str = "auto"
    export: bool = True  # write export/ (a SavedModel for serving) beside model.keras


class TrainingDiverged(UserError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class ModelDirInUse(UserError, FileExistsError):
    """``model_dir`` holds another run's work and ``overwrite`` was not given."""


class CheckpointMismatch(UserError, ValueError):
    """The checkpoint to resume from was made for other classes or image shapes."""


def existing_run_artifacts(model_dir):
    """Names of an earlier run's files in ``model_dir`` (empty if there are none)."""
    if not os.path.isdir(model_dir):
        return []
    return [name for name in choices.RUN_ARTIFACTS if os.path.exists(os.path.join(model_dir, name))]


def make_strategy(name, tpu=None):
    """``auto``: MirroredStrategy over the visible GPUs, the default strategy without any.

    ``multi_worker`` reads the cluster from ``TF_CONFIG``; it must be made before any other
    TensorFlow operation runs. ``tpu`` connects to the TPU named by ``tpu``.
    """
    if name not in choices.STRATEGIES:
        raise ValueError(f"`strategy` must be one of {choices.STRATEGIES}. Received: strategy={name!r}")
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "mirrored" or (name == "auto" and tf.config.list_physical_devices("GPU")):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes files: the only one, the chief, or worker 0 without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def build_model(config, num_classes, image_shape):
    """The backbone of ``config`` wrapped in a ``RobustClassifier`` (call inside a scope)."""
    backbone = backbones.build(
        config.architecture,
        num_classes,
        image_shape,
        weights=config.weights,
        width=config.width,
        synchronized_bn=config.synchronized_bn,
    )
    return RobustClassifier(
        backbone,
        method=config.method,
        alpha=config.alpha,
        beta=config.beta,
        trades_beta=config.trades_beta,
        train_attack=config.train_attack,
        eval_attack=config.eval_attack,
        seed=config.seed,
        attack=config.attack,
        free_replays=config.free_replays,
        clean_ce_weight=config.clean_ce_weight,
        bn_batches=config.bn_batches,
        weight_decay=config.weight_decay if config.weight_decay_type == "l2" else 0.0,
    )


def _guard(config):
    """The catastrophic-overfitting guard of ``config``, or None."""
    action = config.overfit_guard
    if action not in choices.OVERFIT_GUARDS:
        raise ValueError(f"`overfit_guard` must be one of {choices.OVERFIT_GUARDS}. Received: {action!r}")
    if action == "auto":
        action = "off" if config.attack == "pgd" or config.method == "standard" else "stop"
    if action == "off":
        return None
    if config.eval_attack is None:
        raise ValueError(f"overfit_guard={action!r} watches validation PGD accuracy: set `eval_attack`")
    return guards.CatastrophicOverfittingGuard(action=action)


def _identity(config):
    values = _jsonable(config)
    return {k: v for k, v in values.items() if k not in _RESUMABLE_CHANGES}


# The flag of each setting whose name differs from its TrainConfig field (dotted for nested ones).
_FLAG_NAMES = {
    "data.name": "dataset", "train_attack.steps": "attack_steps", "train_attack.loss": "attack_loss",
    "eval_attack.eps": "eval_eps", "eval_attack.step_size": "eval_step_size", "eval_attack.steps": "eval_steps",
    "synchronized_bn": "sync_batchnorm",
}
_PIXEL_FIELDS = ("eps", "step_size")


def _flatten(values, prefix=""):
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(field, value):
    if value is None:
        return "unset"
    if field.rsplit(".", 1)[-1] in _PIXEL_FIELDS and isinstance(value, float):
        return pixels.fraction(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def flag_differences(saved, current):
    """``["--batch_size: 128 then, 8 now", ...]`` for the settings that differ, named by flag."""
    saved, current = _flatten(saved), _flatten(current)
    lines = {}
    for field in sorted(set(saved) | set(current)):
        then, now = saved.get(field), current.get(field)
        if then != now:
            flag = _FLAG_NAMES.get(field, field.rsplit(".", 1)[-1])
            lines.setdefault(flag, f"--{flag}: {_show(field, then)} then, {_show(field, now)} now")
    return list(lines.values())


@dataclasses.dataclass(frozen=True)
class DirPlan:
    """What a run will do with its ``model_dir``, decided before anything is written there.

    ``action``: ``"new"`` (nothing of a run's progress is there), ``"resume"`` (an unfinished
    run with the same settings) or ``"replace"`` (``--overwrite`` of another run). ``remove``:
    the earlier files that go once the run can start; ``note``: the line that says so.
    """

    action: str
    remove: tuple = ()
    note: str | None = None

    @property
    def resumes(self):
        return self.action == "resume"


def _has_checkpoint(model_dir):
    return tf.train.latest_checkpoint(os.path.join(model_dir, "resume")) is not None


def plan_model_dir(config):
    """Decides what happens to ``config.model_dir``; writes and deletes nothing.

    * Nothing there, or a run that stopped before its first checkpoint (no progress to keep):
      a new run; such leftovers go.
    * An unfinished run with checkpoints and the same settings: it resumes, with or without
      ``overwrite``, so that repeating a killed command never loses its progress.
    * A finished run (``results.json``, ``model.keras`` or ``export/``), or an unfinished one
      with other settings: refused with ``ModelDirInUse`` unless ``overwrite``, which replaces
      it (its evaluations included).
    """
    model_dir = config.model_dir
    existing = existing_run_artifacts(model_dir)
    leftovers = tuple(existing) + tuple(
        name for name in choices.RUN_EVALUATIONS if os.path.exists(os.path.join(model_dir, name))
    )
    if not existing:
        return DirPlan("new")
    finished = [n for n in choices.FINISHED_RUN_ARTIFACTS if n in existing]
    if finished:
        if not config.overwrite:
            raise ModelDirInUse(
                f"--model_dir {model_dir} already holds a finished run ({', '.join(finished)}); "
                "choose another directory, or pass --overwrite to replace it"
            )
        return DirPlan("replace", leftovers, f"Replacing the finished run in {model_dir} (--overwrite): "
                                             f"its {', '.join(leftovers)} go")
    if not _has_checkpoint(model_dir):
        return DirPlan("new", leftovers, f"{model_dir} holds a run that stopped before its first checkpoint; "
                                         "starting afresh")
    differences = _differences_from_saved(config)
    if not differences:
        return DirPlan("resume")
    if config.overwrite:
        return DirPlan("replace", leftovers, f"Replacing the unfinished run in {model_dir} (--overwrite), "
                                             f"started with other flags ({'; '.join(differences)})")
    raise ModelDirInUse(
        f"--model_dir {model_dir} holds an unfinished run started with other flags "
        f"({'; '.join(differences)}); run its command again to resume it, choose another "
        "directory, or pass --overwrite to replace it"
    )


def _differences_from_saved(config):
    saved_path = os.path.join(config.model_dir, "run_config.json")
    if not os.path.exists(saved_path):
        return [f"no run_config.json says which (it holds {', '.join(existing_run_artifacts(config.model_dir))})"]
    with open(saved_path) as f:
        saved = {k: v for k, v in json.load(f).items() if k not in _RESUMABLE_CHANGES}
    # A run from an older version lacks the settings added since; it ran with their defaults,
    # or with what the package did before the setting existed (_LEGACY).
    for field in dataclasses.fields(TrainConfig):
        if field.name not in saved and field.name not in _RESUMABLE_CHANGES and field.default is not dataclasses.MISSING:
            saved[field.name] = _LEGACY.get(field.name, field.default)
    current = _identity(config)
    for values in (saved, current):  # "auto" is compared as what it means for the method
        values["bn_batches"] = resolve_bn_batches(values["method"], values["bn_batches"])
    return flag_differences(saved, current)


def prepare_model_dir(config):
    """Plans and claims ``model_dir`` at once; returns whether the run resumes.

    The trainer plans first and claims only once data and model are ready (``run``); this is
    the two together, for callers that need nothing in between.
    """
    plan = plan_model_dir(config)
    claim_model_dir(config, plan)
    return plan.resumes


def claim_model_dir(config, plan, log=None):
    """Removes what ``plan`` replaces (saying so) and writes ``run_config.json``."""
    for name in plan.remove:
        path = os.path.join(config.model_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if plan.note and log:
        log(plan.note)
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(config.model_dir, "run_config.json"), "w") as f:
        json.dump(_jsonable(config), f, indent=2)


def global_step(model):
    """Optimizer steps taken so far (a distributed variable needs an explicit read)."""
    return int(model.optimizer.iterations.value.numpy())


def batches_done(model):
    """Training batches taken so far (free training takes several optimizer steps on each)."""
    return global_step(model) // model.updates_per_batch


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops at the first step whose loss is NaN or infinite, before anything is saved."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"The training loss became {float(loss)} at step "
                f"{global_step(self.model)}. Nothing was saved after the last good "
                "checkpoint; lower --learning_rate (or the pairing weights) and start again"
            )


class _ResumeCheckpoint(keras.callbacks.Callback):
    """Saves the resumable state every ``every`` steps and at the end of each epoch."""

    def __init__(self, manager, every, best_score, best_callback, last_saved):
        super().__init__()
        self.manager = manager
        self.every = every
        self.best_score = best_score
        self.best_callback = best_callback
        self.last_saved = last_saved

    def _save(self):
        step = global_step(self.model)
        if step != self.last_saved:
            self.manager.save(checkpoint_number=step)
            self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if self.every and batches_done(self.model) % self.every == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        best = self.best_callback.best
        if best is not None and math.isfinite(best):
            self.best_score.assign(best)
        self._save()


class _StopAfterOneEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _restore(checkpoint, model_dir, data):
    """Restores the latest checkpoint in ``model_dir/resume``; returns its step (0 if none)."""
    state_path = os.path.join(model_dir, "resume", "data.json")
    if os.path.exists(state_path):
        with open(state_path) as f:
            saved = json.load(f)
        now = {"num_classes": data.num_classes, "image_shape": list(data.image_shape)}
        if saved != now:
            raise CheckpointMismatch(
                f"The checkpoint in {os.path.dirname(state_path)} was made for "
                f"{saved['num_classes']} classes and images of shape {tuple(saved['image_shape'])}, "
                f"but the data now has {now['num_classes']} classes ({', '.join(data.class_names)}) "
                f"of shape {tuple(now['image_shape'])}; restore the data or pass --overwrite"
            )
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "resume"))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()


def _evaluate(model, dataset, seed):
    """Test metrics of ``model``, its attack's random starts drawn from ``seed`` whatever the
    generator's state, so that identical weights give identical numbers."""
    generator = model.seed_generator
    kept = generator.state.numpy()
    generator.state.assign(keras.random.SeedGenerator(seed).state.numpy())
    try:
        results = model.evaluate(dataset, verbose=0, return_dict=True)
    finally:
        generator.state.assign(kept)
    return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in results.items()}


class _BestEpoch(keras.callbacks.Callback):
    """Remembers the epoch (1-based) of the best checkpoint, in a variable the resume state keeps."""

    def __init__(self, best_callback, variable):
        super().__init__()
        self.best_callback = best_callback
        self.variable = variable
        self.best = best_callback.best

    def on_epoch_end(self, epoch, logs=None):
        if self.best_callback.best != self.best:
            self.best = self.best_callback.best
            self.variable.assign(epoch + 1)


def describe_run(config, data, model, resume_point=None):
    """The lines a run prints before it starts: what it trains, on what, where."""
    if config.method == "standard":
        objective = "standard training (no attack)"
    else:
        attack = PGDConfig.coerce(config.train_attack, "train_attack")
        how = {"pgd": f"PGD-{attack.steps}", "fgsm_rs": "FGSM-RS", "free": f"free ({config.free_replays} replays)"}
        objective = (
            f"{config.method} with {how[config.attack]} at eps {pixels.fraction(attack.eps)}, "
            f"step {pixels.fraction(attack.step_size)}"
        )
    names = ", ".join(data.class_names[:6]) + (", ..." if len(data.class_names) > 6 else "")
    sizes = ", ".join(f"{data.sizes[p]} {p}" for p in ("train", "val", "test"))
    shape = "x".join(str(d) for d in data.image_shape)
    parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    lines = [
        f"Training {objective}, {config.epochs} epochs, into {config.model_dir}",
        f"  data:  {config.data.name}, {data.num_classes} classes ({names}); {sizes}; {shape}",
        f"  model: {config.architecture}" + (f" width {config.width}" if config.architecture == "resnet18" else "")
        + f", {parameters:,} trainable parameters; {config.optimizer} lr {config.learning_rate:g} {config.schedule}",
    ]
    lines += [f"  note:  {note}" for note in data.notes]
    if resume_point:
        epoch, step = resume_point
        lines.append(f"  resuming from epoch {epoch + 1}, step {step}")
    return lines


def run(config, log=print, callbacks=()):
    """Trains (or resumes), evaluates and exports; returns the dict written to ``results.json``.

    In named stages: the strategy; the plan for ``model_dir`` (nothing is written yet); data;
    model (with its pretrained weights); only then the directory is claimed, so that a run
    that cannot start leaves nothing behind that blocks the corrected command; checkpoints and
    training; evaluation of the last and best models; saving and export. ``log`` receives the
    lines a user should see (the summary at the start, what was replaced, a resume point);
    ``callbacks`` are more Keras callbacks for ``fit`` (a benchmark's timer, say).
    """
    if config.precision not in choices.PRECISIONS:
        raise ValueError(f"`precision` must be one of {choices.PRECISIONS}. Received: {config.precision!r}")
    # A multi-worker strategy must exist before any other TensorFlow operation runs.
    strategy = make_strategy(config.strategy, config.tpu)
    chief = is_chief(strategy)
    if chief:
        plan = plan_model_dir(config)
    else:  # workers read the chief's checkpoints (model_dir is on storage all can see)
        plan = DirPlan("resume" if _has_checkpoint(config.model_dir) else "new")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.precision)

    # A resumed run reads the split it saved; a new one draws it and saves it once it starts.
    data = datasets.load(config.data, workdir=config.model_dir if plan.resumes else None)
    if config.num_classes and config.num_classes != data.num_classes:
        raise DataError(
            f"The model is set up for {config.num_classes} classes (--num_classes) but dataset "
            f"{config.data.name!r} has {data.num_classes}: {', '.join(data.class_names)}"
        )
    stream = data.train_stream
    steps_per_epoch = stream.steps_per_epoch

    with strategy.scope():
        model = build_model(config, data.num_classes, data.image_shape)
        schedule = optimization.learning_rate_schedule(
            config.learning_rate,
            schedule=config.schedule,
            steps_per_epoch=steps_per_epoch * model.updates_per_batch,
            epochs=config.epochs,
            boundaries=config.lr_boundaries,
            decay_factor=config.lr_decay,
        )
        model.compile(
            optimizer=optimization.build_optimizer(
                config.optimizer,
                schedule,
                weight_decay=config.weight_decay if config.weight_decay_type == "decoupled" else 0.0,
                momentum=config.momentum,
            ),
            jit_compile=config.jit_compile,
        )
        model.optimizer.build(model.trainable_variables)
        best_score = tf.Variable(-math.inf, trainable=False, dtype=tf.float64)
        best_epoch = tf.Variable(0, trainable=False, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(
        model=model,
        optimizer=model.optimizer,
        # The attack's random-start generator is not tracked through the model.
        attack_seed=model.seed_generator.state.value,
        best_score=best_score,
        best_epoch=best_epoch,
    )
    if plan.resumes:
        _restore(checkpoint, config.model_dir, data)

    # Everything the run needs is in hand: now the directory is claimed.
    # Other workers write what every worker must save (collectively) to a scratch directory.
    out_dir = config.model_dir if chief else tempfile.mkdtemp(prefix="atalp_worker_")
    if chief:
        claim_model_dir(config, plan, log)
        data = datasets.save_split(data, os.path.join(out_dir, "split.json"))
    resume_dir = os.path.join(out_dir, "resume")
    manager = tf.train.CheckpointManager(checkpoint, resume_dir, max_to_keep=2)
    os.makedirs(resume_dir, exist_ok=True)
    with open(os.path.join(resume_dir, "data.json"), "w") as f:
        json.dump({"num_classes": data.num_classes, "image_shape": list(data.image_shape)}, f)

    step = batches_done(model)
    epoch, offset = divmod(step, steps_per_epoch)
    if chief:
        for line in describe_run(config, data, model, (epoch, step) if plan.resumes else None):
            log(line)

    checkpoints = os.path.join(out_dir, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    best_monitor = "val_pgd_accuracy" if config.eval_attack else "val_clean_accuracy"
    best_restored = float(best_score.numpy())
    best_callback = keras.callbacks.ModelCheckpoint(
        os.path.join(checkpoints, "best.keras"),
        monitor=best_monitor,
        mode="max",
        save_best_only=True,
        initial_value_threshold=best_restored if math.isfinite(best_restored) else None,
    )
    guard = _guard(config)
    callbacks = [
        *callbacks,
        _StopOnNonFiniteLoss(),
        # Before the checkpoints, so that a stop on collapse saves the restored weights.
        *([guard] if guard else []),
        keras.callbacks.ModelCheckpoint(os.path.join(checkpoints, "last.keras")),
        best_callback,
        _BestEpoch(best_callback, best_epoch),
        _ResumeCheckpoint(
            manager, config.checkpoint_steps, best_score, best_callback,
            last_saved=global_step(model),
        ),
    ]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")))
        if config.verbose != 0:
            live = None if config.verbose == "auto" else config.verbose == 1
            callbacks.append(progress.EpochLine(config.epochs, live=live, write=log))

    # Validation picks the best epoch and feeds the guard: a cheaper attack than the test's,
    # every validate_every epochs and at the last, on a fixed subset if asked.
    validation = data.val
    if config.val_examples:
        validation = datasets.fixed_subset(
            validation, config.val_examples, data.sizes["val"], config.seed, config.data.batch_size
        )
    test_attack = PGDConfig.coerce(config.eval_attack, "eval_attack")
    if config.val_steps and test_attack is not None:
        model.eval_attack = dataclasses.replace(test_attack, steps=config.val_steps)
    fit_args = dict(
        validation_data=validation,
        validation_freq=sorted(set(range(config.validate_every, config.epochs + 1, config.validate_every)) | {config.epochs}),
        callbacks=callbacks,
        verbose=0,  # progress.EpochLine reports instead of Keras' bar
        shuffle=False,  # the stream shuffles itself; Keras' own flag only warns on tf.data
    )
    try:
        if offset:
            # Finish the interrupted epoch with its remaining steps, then carry on whole epochs.
            # (Keras cannot start mid-epoch; epochs=config.epochs keeps the epoch numbers right.)
            model.fit(
                stream.from_step(step, epoch + 1), initial_epoch=epoch, epochs=config.epochs,
                steps_per_epoch=steps_per_epoch - offset,
                **{**fit_args, "callbacks": callbacks + [_StopAfterOneEpoch()]},
            )
            epoch += 1
        if epoch < config.epochs and not (guard and guard.collapse and guard.action == "stop"):
            model.fit(
                stream.from_step(epoch * steps_per_epoch, config.epochs), initial_epoch=epoch,
                epochs=config.epochs,
                steps_per_epoch=steps_per_epoch, **fit_args,
            )
    except KeyboardInterrupt:
        raise _interrupted(manager, steps_per_epoch, model.updates_per_batch) from None
    # The test (and the saved model) attack with the test attack; Keras keeps the traced test
    # step, so it must be traced again.
    model.eval_attack = test_attack
    model.test_function = None

    results = {
        "config": _jsonable(config),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        "split_sizes": data.sizes,
        "split_file": data.split_path,
        "skipped_files": [{"path": p, "reason": r} for p, r in data.skipped],
        "steps": global_step(model),
        "resumed": plan.resumes,
        "catastrophic_overfitting": guard.collapse if guard else None,
        "best_epoch": int(best_epoch.numpy()) or None,
        "best_monitor": best_monitor,
        "test_last": _evaluate(model, data.test, config.seed),
    }
    with strategy.scope():
        # Only the weights matter for evaluation; compile() without an optimizer skips
        # restoring the saved optimizer state.
        best = keras.saving.load_model(os.path.join(checkpoints, "best.keras"), compile=False)
        best.eval_attack = model.eval_attack
        best.compile()
    results["test_best"] = _evaluate(best, data.test, config.seed)

    if not chief:
        shutil.rmtree(out_dir, ignore_errors=True)
        return results
    final_path = os.path.join(out_dir, "model.keras")
    model.save(final_path)
    results["model_path"] = final_path
    if config.export:
        export_dir = os.path.join(out_dir, "export")
        export_serving(model, export_dir, data.image_shape)
        results["export_dir"] = export_dir
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def summary(results, eval_attack):
    """The lines that close a run: test accuracy of the last and best models, and where
    everything went."""
    attack = (
        f"PGD-{eval_attack.steps} {eval_attack.norm} eps={pixels.both(eval_attack.eps)} "
        f"step={pixels.both(eval_attack.step_size)}"
    )
    best = f"epoch {results['best_epoch']}" if results.get("best_epoch") else "its best"
    lines = [
        "",
        f"Test set ({results['split_sizes']['test']} images), {attack}:",
        f"  {'model':<6} {'clean acc':>10} {'PGD acc':>10}",
    ]
    for name in ("last", "best"):
        scores = results[f"test_{name}"]
        lines.append(f"  {name:<6} {scores['clean_accuracy']:>10.4f} {scores['pgd_accuracy']:>10.4f}")
    lines.append(f"  (best: {best} by validation PGD accuracy; both attacked from the same random starts)")
    if "model_path" not in results:
        return lines + ["This worker is not the chief: the chief writes the model, export and results."]
    if results["skipped_files"]:
        lines.append(f"Skipped {len(results['skipped_files'])} unreadable file(s) (--bad_images=skip); "
                     "they are listed in results.json")
    if results["split_file"]:
        lines.append(f"Split:  {results['split_file']}  (reuse with --split_file)")
    lines.append(f"Model:  {results['model_path']}")
    if results.get("export_dir"):
        lines.append(f"Export: {results['export_dir']}")
        lines.append("  (signatures serving_default and serve_uint8: images -> probabilities, class_ids)")
    return lines


def _interrupted(manager, steps_per_epoch, updates_per_batch):
    """What a Ctrl-C leaves: the last checkpoint and how to go on from it."""
    latest = manager.latest_checkpoint
    if latest is None:
        return Interrupted(
            "Stopped before the first checkpoint, so there is nothing to resume; run the same "
            "command to start again"
        )
    step = int(latest.rsplit("-", 1)[-1]) // updates_per_batch  # batches, not optimizer steps
    return Interrupted(
        f"Stopped. The last checkpoint is {latest} (epoch {step // steps_per_epoch + 1}, step "
        f"{step}); run the same command to resume from it"
    )


def _jsonable(config):
    values = dataclasses.asdict(config)
    values["lr_boundaries"] = list(config.lr_boundaries)
    return values
