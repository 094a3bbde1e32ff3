"""One training run, from a ``TrainConfig`` to checkpoints, logs, metrics and a SavedModel.

The command line (``atalp_tf.train``) only turns flags into a ``TrainConfig``; everything
else lives here so it can be called from Python and tested without a subprocess.

Files written in ``model_dir`` (by the chief only, under a multi-worker strategy):

* ``run_config.json``: the configuration; a later run in the same directory resumes only
  if its configuration is the same, and is refused otherwise;
* ``resume/``: TensorFlow checkpoints (weights, optimizer, attack seed, best score) every
  ``checkpoint_steps`` steps and at each epoch's end; a killed run started again with the
  same command continues from the last one, at the same epoch, step and data position;
* ``checkpoints/last.keras`` after every epoch, ``checkpoints/best.keras`` at the best
  validation PGD accuracy (robust overfitting makes the two differ; both are reported);
* ``logs/`` for TensorBoard;
* ``model.keras`` (the final model) and ``export/`` (SavedModel for serving);
* ``results.json``: the config and the test accuracies of the last and best models.
"""

import dataclasses
import json
import math
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from atalp_tf import backbones
from atalp_tf import choices
from atalp_tf import datasets
from atalp_tf import guards
from atalp_tf import optimization
from atalp_tf.attacks import PGDConfig
from atalp_tf.export import export_serving
from atalp_tf.model import RobustClassifier
from atalp_tf.model import resolve_bn_batches

# What runs made before a setting existed did, where that differs from the setting's default.
_LEGACY = {"bn_batches": "joint"}
# Settings that may change between a run and its resumption: how it runs, not what it learns.
_RESUMABLE_CHANGES = ("overwrite", "verbose", "strategy", "tpu", "checkpoint_steps", "jit_compile", "export")


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
    overwrite: bool = False
    verbose: int | str = "auto"
    export: bool = True  # write export/ (a SavedModel for serving) beside model.keras


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class ModelDirInUse(FileExistsError):
    """``model_dir`` holds another run's work and ``overwrite`` was not given."""


class CheckpointMismatch(ValueError):
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


def prepare_model_dir(config):
    """Clears ``model_dir`` when overwriting; returns whether the run resumes one in progress.

    Raises ``ModelDirInUse`` if the directory holds a finished run, or one started with
    another configuration, and ``config.overwrite`` is not set.
    """
    existing = existing_run_artifacts(config.model_dir)
    if config.overwrite:
        for name in existing:
            path = os.path.join(config.model_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return False
    if not existing:
        return False
    finished = [n for n in choices.FINISHED_RUN_ARTIFACTS if n in existing]
    if finished:
        raise ModelDirInUse(
            f"--model_dir {config.model_dir} already holds a finished run ({', '.join(finished)}); "
            "choose another directory, or pass --overwrite to replace it"
        )
    saved_path = os.path.join(config.model_dir, "run_config.json")
    if not os.path.exists(saved_path):
        raise ModelDirInUse(
            f"--model_dir {config.model_dir} already holds a run's files ({', '.join(existing)}) "
            "but no run_config.json; choose another directory, or pass --overwrite to replace it"
        )
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
    differences = [
        f"{key}: {saved.get(key)!r} then, {current.get(key)!r} now"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]
    if differences:
        raise ModelDirInUse(
            f"--model_dir {config.model_dir} already holds a run with another configuration "
            f"({'; '.join(differences)}); run the same command to resume it, choose another "
            "directory, or pass --overwrite to replace it"
        )
    return True


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


def _evaluate(model, dataset):
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return {k: float(v) for k, v in results.items()}


def run(config):
    """Trains (or resumes), evaluates and exports; returns the dict written to ``results.json``."""
    if config.precision not in choices.PRECISIONS:
        raise ValueError(f"`precision` must be one of {choices.PRECISIONS}. Received: {config.precision!r}")
    # A multi-worker strategy must exist before any other TensorFlow operation runs.
    strategy = make_strategy(config.strategy, config.tpu)
    chief = is_chief(strategy)
    if chief:
        resuming = prepare_model_dir(config)
    else:  # workers read the chief's checkpoints (model_dir is on storage all can see)
        resuming = tf.train.latest_checkpoint(os.path.join(config.model_dir, "resume")) is not None
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.precision)

    # Other workers write what every worker must save (collectively) to a scratch directory.
    out_dir = config.model_dir if chief else tempfile.mkdtemp(prefix="atalp_worker_")
    os.makedirs(out_dir, exist_ok=True)
    if chief:
        with open(os.path.join(out_dir, "run_config.json"), "w") as f:
            json.dump(_jsonable(config), f, indent=2)
    data = datasets.load(config.data, workdir=out_dir)
    if config.num_classes and config.num_classes != data.num_classes:
        raise ValueError(
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
    checkpoint = tf.train.Checkpoint(
        model=model,
        optimizer=model.optimizer,
        # The attack's random-start generator is not tracked through the model.
        attack_seed=model.seed_generator.state.value,
        best_score=best_score,
    )
    if resuming:
        _restore(checkpoint, config.model_dir, data)
    resume_dir = os.path.join(out_dir, "resume")
    manager = tf.train.CheckpointManager(checkpoint, resume_dir, max_to_keep=2)
    os.makedirs(resume_dir, exist_ok=True)
    with open(os.path.join(resume_dir, "data.json"), "w") as f:
        json.dump({"num_classes": data.num_classes, "image_shape": list(data.image_shape)}, f)

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
        _StopOnNonFiniteLoss(),
        # Before the checkpoints, so that a stop on collapse saves the restored weights.
        *([guard] if guard else []),
        keras.callbacks.ModelCheckpoint(os.path.join(checkpoints, "last.keras")),
        best_callback,
        _ResumeCheckpoint(
            manager, config.checkpoint_steps, best_score, best_callback,
            last_saved=global_step(model),
        ),
    ]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")))

    step = batches_done(model)
    epoch, offset = divmod(step, steps_per_epoch)
    fit_args = dict(
        validation_data=data.val,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the stream shuffles itself; Keras' own flag only warns on tf.data
    )
    if offset:
        # Finish the interrupted epoch with its remaining steps, then carry on whole epochs.
        # (Keras cannot start mid-epoch; epochs=config.epochs keeps its "Epoch k/N" right.)
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

    results = {
        "config": _jsonable(config),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        "split_sizes": data.sizes,
        "split_file": data.split_path,
        "skipped_files": [{"path": p, "reason": r} for p, r in data.skipped],
        "steps": global_step(model),
        "resumed": resuming,
        "catastrophic_overfitting": guard.collapse if guard else None,
        "test_last": _evaluate(model, data.test),
    }
    with strategy.scope():
        # Only the weights matter for evaluation; compile() without an optimizer skips
        # restoring the saved optimizer state.
        best = keras.saving.load_model(os.path.join(checkpoints, "best.keras"), compile=False)
        best.compile()
    results["test_best"] = _evaluate(best, data.test)

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


def _jsonable(config):
    values = dataclasses.asdict(config)
    values["lr_boundaries"] = list(config.lr_boundaries)
    return values
