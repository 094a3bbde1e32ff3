"""One training run, from a ``TrainConfig`` to checkpoints, logs, metrics and a SavedModel.

The command line (``atalp_tf.train``) only turns flags into a ``TrainConfig``; everything
else lives here so it can be called from Python and tested without a subprocess.

Files written in ``model_dir``:

* ``checkpoints/last.keras`` after every epoch, ``checkpoints/best.keras`` at the best
  validation PGD accuracy (robust overfitting makes the two differ; both are reported);
* ``logs/`` for TensorBoard;
* ``model.keras`` (the final model) and ``export/`` (SavedModel for serving);
* ``results.json``: the config and the test accuracies of the last and best models.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from atalp_tf import backbones
from atalp_tf import choices
from atalp_tf import datasets
from atalp_tf import optimization
from atalp_tf.attacks import PGDConfig
from atalp_tf.export import export_serving
from atalp_tf.model import RobustClassifier



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
    eval_attack: PGDConfig | None = None
    epochs: int = 10
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    lr_boundaries: tuple = ()
    lr_decay: float = 0.1
    precision: str = "float32"
    strategy: str = "auto"
    synchronized_bn: bool = False
    seed: int = 0
    overwrite: bool = False
    verbose: int | str = "auto"


def existing_run_artifacts(model_dir):
    """Names of an earlier run's files in ``model_dir`` (empty if there are none)."""
    if not os.path.isdir(model_dir):
        return []
    return [name for name in choices.RUN_ARTIFACTS if os.path.exists(os.path.join(model_dir, name))]


def make_strategy(name):
    """``auto``: MirroredStrategy over the visible GPUs, the default strategy without any."""
    if name not in choices.STRATEGIES:
        raise ValueError(f"`strategy` must be one of {choices.STRATEGIES}. Received: strategy={name!r}")
    if name == "mirrored" or (name == "auto" and tf.config.list_physical_devices("GPU")):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
    )


def _evaluate(model, dataset):
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return {k: float(v) for k, v in results.items()}


def run(config):
    """Trains, evaluates and exports; returns the dict written to ``results.json``."""
    existing = existing_run_artifacts(config.model_dir)
    if existing and not config.overwrite:
        raise FileExistsError(
            f"model_dir {config.model_dir} already holds a run ({', '.join(existing)}); "
            "choose another directory or pass overwrite=True (--overwrite) to replace it"
        )
    if config.precision not in choices.PRECISIONS:
        raise ValueError(f"`precision` must be one of {choices.PRECISIONS}. Received: {config.precision!r}")

    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.precision)
    strategy = make_strategy(config.strategy)
    data = datasets.load(config.data, workdir=config.model_dir)
    if config.num_classes and config.num_classes != data.num_classes:
        raise ValueError(
            f"The model is set up for {config.num_classes} classes (--num_classes) but dataset "
            f"{config.data.name!r} has {data.num_classes}: {', '.join(data.class_names)}"
        )
    steps_per_epoch = data.sizes["train"] // config.data.batch_size

    with strategy.scope():
        model = build_model(config, data.num_classes, data.image_shape)
        schedule = optimization.learning_rate_schedule(
            config.learning_rate,
            schedule=config.schedule,
            steps_per_epoch=steps_per_epoch,
            epochs=config.epochs,
            boundaries=config.lr_boundaries,
            decay_factor=config.lr_decay,
        )
        model.compile(
            optimizer=optimization.build_optimizer(
                config.optimizer,
                schedule,
                weight_decay=config.weight_decay,
                momentum=config.momentum,
            )
        )

    checkpoints = os.path.join(config.model_dir, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    best_monitor = "val_pgd_accuracy" if config.eval_attack else "val_clean_accuracy"
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(checkpoints, "last.keras")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(checkpoints, "best.keras"),
            monitor=best_monitor,
            mode="max",
            save_best_only=True,
        ),
        keras.callbacks.TensorBoard(os.path.join(config.model_dir, "logs")),
    ]
    model.fit(
        data.train,
        validation_data=data.val,
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the dataset shuffles itself; Keras' own flag only warns on tf.data
    )

    results = {
        "config": _jsonable(config),
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape),
        "class_names": list(data.class_names),
        "split_sizes": data.sizes,
        "split_file": data.split_path,
        "skipped_files": [{"path": p, "reason": r} for p, r in data.skipped],
        "test_last": _evaluate(model, data.test),
    }
    with strategy.scope():
        # Only the weights matter for evaluation; compile() without an optimizer skips
        # restoring the saved optimizer state.
        best = keras.saving.load_model(os.path.join(checkpoints, "best.keras"), compile=False)
        best.compile()
    results["test_best"] = _evaluate(best, data.test)

    final_path = os.path.join(config.model_dir, "model.keras")
    model.save(final_path)
    export_dir = os.path.join(config.model_dir, "export")
    if config.overwrite and os.path.isdir(export_dir):
        tf.io.gfile.rmtree(export_dir)
    export_serving(model, export_dir, data.image_shape)
    results["model_path"] = final_path
    results["export_dir"] = export_dir
    with open(os.path.join(config.model_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def _jsonable(config):
    values = dataclasses.asdict(config)
    values["lr_boundaries"] = list(config.lr_boundaries)
    return values
