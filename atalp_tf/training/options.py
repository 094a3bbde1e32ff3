"""Each ``TrainConfig`` setting as the training command's flag: name, help, default, bounds,
check and how the flag's value becomes the setting's.

The command line defines its flags from ``GROUPS`` in order (its ``--help`` shows them in
these groups, the configuration's own: ``data``, ``model``, ``objective``, ``adversary``,
``optimizer``, ``runtime``, and ``run`` for the settings at the top of ``TrainConfig``), builds
the configuration back from their values (``settings``, then ``TrainConfig.from_settings``),
and a run that cannot resume names the settings that changed by their flags (``differences``).
Settings with no flag are in ``INTERNAL``, each with why.

Importable without TensorFlow, so a mistyped flag fails before any work starts. A setting's
path is its key in ``run_config.json`` with the data's and the attacks' keys nested:
``epochs``, ``data.batch_size``, ``train_attack.steps``.
"""

import dataclasses
import os
import typing

from atalp_tf import choices
from atalp_tf import pixels


@dataclasses.dataclass(frozen=True)
class Option:
    """One flag and the settings it gives.

    ``kind``: ``string``, ``integer``, ``float``, ``bool``, ``enum`` (of ``values``), ``list``
    or ``pixel`` (a value in the pixel range, written ``8/255``). ``fields``: the setting paths
    it sets (the attacks' norm and random start are one flag for both). ``parse``: flag value
    to setting (``0`` to None, say), identity by default. ``check``: ``(predicate, message)``
    on the flag's value, beyond its kind and bounds. ``exists``: ``(kind, requirement)`` of a
    path that must exist when given (``cli.require_existing``'s arguments).
    """

    flag: str
    fields: tuple
    kind: str
    default: typing.Any
    help: str
    values: tuple = ()
    lower: float | None = None
    upper: float | None = None
    required: bool = False
    parse: typing.Callable | None = None
    check: tuple | None = None
    exists: tuple | None = None


def _option(flag, field, kind, default, help_text, **kwargs):
    return Option(flag, (field,) if isinstance(field, str) else tuple(field), kind, default, help_text, **kwargs)


def _zero_is_none(value):
    return value or None


def _increasing_epochs(values):
    try:
        epochs = [int(v) for v in values]
    except ValueError:
        return False
    return epochs == sorted(set(epochs)) and all(e > 0 for e in epochs)


GROUPS = {
    "run": (
        _option("model_dir", "model_dir", "string", None,
                "Directory for checkpoints, TensorBoard logs and the export.", required=True,
                check=(lambda value: value is None or not os.path.isfile(value),
                       "--model_dir must be a directory path, not an existing file")),
        _option("deterministic", "deterministic", "bool", False,
                "Make TensorFlow ops deterministic (slower), so a run can be repeated exactly."),
    ),
    "data": (
        _option("dataset", "data.name", "string", "digits",
                f"One of {', '.join(choices.DATASETS)}, or tfds:NAME for a TensorFlow Datasets set.",
                check=(choices.is_dataset, f"--dataset must be {choices.DATASET_NAMES}")),
        _option("data_dir", "data.data_dir", "string", None,
                "Directory of flowers17 or folder data (TFDS' data_dir for tfds:NAME)."),
        _option("image_size", "data.image_size", "integer", 0,
                "Square side of the model's input; 0 keeps an array set's native size.", lower=0,
                parse=_zero_is_none),
        _option("batch_size", "data.batch_size", "integer", 128, "Global batch size, split across replicas.",
                lower=1),
        _option("seed", "data.seed", "integer", 0, "Seed of weights, data split, shuffling and attacks."),
        _option("augment", "data.augment", "enum", "auto",
                "Training augmentation; auto picks resized_crop for files, pad_crop for CIFAR-10.",
                values=choices.AUGMENTATIONS),
        _option("bad_images", "data.bad_images", "enum", "stop",
                "On unreadable image files: stop and list them, or skip them and report the count.",
                values=choices.BAD_IMAGE_POLICIES),
        _option("cache", "data.cache", "string", "",
                "Cache decoded images: '' (off), 'memory', or a file path prefix."),
        _option("split_file", "data.split_file", "string", None,
                "split.json of an earlier run, to train and test on the same images.",
                exists=("file", "be an existing split.json")),
        _option("split_index", "data.split_index", "integer", 1, "Which of datasplits.mat's 17 Flowers splits to use.",
                lower=1, upper=3),
    ),
    "model": (
        _option("architecture", "architecture", "string", "resnet18",
                f"Backbone: {choices.ARCHITECTURE_NAMES} (pip install -e '.[hub]'; its weights come with it).",
                check=(choices.is_architecture, f"--architecture must be {choices.ARCHITECTURE_NAMES}")),
        _option("width", "width", "integer", 64, "Channels of resnet18's first stage (64 is standard).", lower=1),
        _option("weights", "weights", "string", "none",
                "'none', 'imagenet' (keras.applications ResNets, downloaded on first use), or the path "
                "of a weights file of the headless network.",
                parse=lambda value: None if value == "none" else value,
                check=(lambda value: value in ("none", "imagenet") or os.path.isfile(value),
                       "--weights must be 'none', 'imagenet' or an existing file")),
        _option("sync_batchnorm", "synchronized_bn", "bool", False,
                "Share resnet18's batch statistics across replicas."),
        _option("num_classes", "num_classes", "integer", 0,
                "Expected class count; the run stops if the data has another (0: any).", lower=0,
                parse=_zero_is_none),
        _option("precision", "precision", "enum", "float32", "Keras dtype policy.", values=choices.PRECISIONS),
    ),
    "objective": (
        _option("method", "method", "enum", "at_alp", "Training objective.", values=choices.METHODS),
        _option("alpha", "alpha", "float", 0.5, "Weight of logit pairing.", lower=0.0),
        _option("beta", "beta", "float", 1.0, "Weight of attention pairing.", lower=0.0),
        _option("trades_beta", "trades_beta", "float", 6.0, "Weight of TRADES' KL.", lower=0.0),
        _option("clean_ce_weight", "clean_ce_weight", "float", 0.0,
                "alp, at, at_alp: share of clean cross-entropy, (1 - w) CE(x_adv) + w CE(x); 0.5 is Kannan "
                "et al.'s mixed batch, 0 the adversarial CE alone.", lower=0.0, upper=1.0),
        _option("bn_batches", "bn_batches", "enum", "auto",
                "Pairing methods and trades: batch norm on one 2B batch of clean and adversarial examples "
                "(joint, Kannan et al.'s ALP) or on each half alone (separate, TRADES' reference); auto: "
                "separate for trades, joint otherwise.", values=choices.BN_BATCHES),
    ),
    "adversary": (
        _option("attack", "attack", "enum", "pgd",
                "How training makes adversarial examples: pgd (--attack_steps steps), fgsm_rs (one step "
                "from a random start, Wong et al. 2020), free (each batch replayed --free_replays times, "
                "Shafahi et al. 2019) or n_fgsm (one step of eps from noise in [-2 eps, 2 eps], not projected "
                "back onto the eps ball, de Jorge et al. 2022).", values=choices.TRAIN_ATTACKS),
        _option("eps", "train_attack.eps", "pixel", "8/255", "Training perturbation size (L-inf or L2)."),
        _option("step_size", "train_attack.step_size", "pixel", None,
                "Training attack step size (default: eps / 4 for pgd, 1.25 * eps for fgsm_rs, eps for free and "
                "n_fgsm)."),
        _option("attack_steps", "train_attack.steps", "integer", 7, "Training PGD steps (--attack=pgd).", lower=1),
        _option("free_replays", "free_replays", "integer", 4, "--attack=free: optimizer steps (and attack steps) "
                "per batch.", lower=1),
        _option("norm", ("train_attack.norm", "eval_attack.norm"), "enum", "linf", "Perturbation norm.",
                values=choices.NORMS),
        _option("random_start", ("train_attack.random_start", "eval_attack.random_start"), "bool", True,
                "Start PGD at a random point in the ball."),
        _option("attack_loss", "train_attack.loss", "enum", "ce", "Training PGD loss.", values=choices.ATTACK_LOSSES),
        _option("eval_eps", "eval_attack.eps", "pixel", None, "PGD eps for validation and test (default --eps)."),
        _option("eval_step_size", "eval_attack.step_size", "pixel", None,
                "PGD step for validation and test (default eval eps / 4)."),
        _option("eval_steps", "eval_attack.steps", "integer", 20, "PGD steps of the test attack.", lower=1),
        _option("overfit_guard", "overfit_guard", "enum", "auto",
                "What to do when validation PGD accuracy collapses (catastrophic overfitting): stop "
                "(keep the best epoch's weights), warn, or off. auto: stop for the single-step attacks, off for pgd.",
                values=choices.OVERFIT_GUARDS),
    ),
    "optimizer": (
        _option("epochs", "epochs", "integer", 100, "Training epochs.", lower=1),
        _option("optimizer", "optimizer", "enum", "sgd", "Optimizer.", values=choices.OPTIMIZERS),
        _option("learning_rate", "learning_rate", "float", 0.1, "Peak learning rate.", lower=0.0),
        _option("momentum", "momentum", "float", 0.9, "SGD momentum.", lower=0.0, upper=1.0),
        _option("weight_decay", "weight_decay", "float", 5e-4, "Weight decay (see --weight_decay_type).", lower=0.0),
        _option("weight_decay_type", "weight_decay_type", "enum", "decoupled",
                "l2: an L2 term whose gradient wd * w goes through momentum with the loss's, on every "
                "weight (PyTorch's SGD weight_decay, as in the Madry and TRADES recipes); decoupled: "
                "w -= lr * wd * w each step, sparing batch norm and biases (Keras' optimizer weight_decay; "
                "with momentum 0.9 about 10x weaker than l2 at the same number).", values=choices.WEIGHT_DECAY_TYPES),
        _option("schedule", "schedule", "enum", "cosine",
                "Learning-rate schedule: cosine to 0; step (--lr_boundaries); onecycle (linear up to "
                "--learning_rate over 2/5 of the run, then down to 0: Wong et al.'s fast training); constant.",
                values=choices.SCHEDULES),
        _option("lr_boundaries", "lr_boundaries", "list", [],
                "Epochs at which the step schedule multiplies the rate by --lr_decay.",
                parse=lambda value: tuple(int(b) for b in value),
                check=(_increasing_epochs,
                       "--lr_boundaries must be increasing positive epoch numbers")),
        _option("lr_decay", "lr_decay", "float", 0.1, "Factor of the step schedule.", lower=0.0),
        _option("ema_momentum", "ema_momentum", "float", 0.0,
                "Weight averaging: momentum of the moving average of the weights and batch norm statistics "
                "(0: off; 0.999 is usual). Validation, the best epoch, the saved models and the export use "
                "the average.",
                check=(lambda value: 0 <= value < 1, "--ema_momentum must be in [0, 1), e.g. 0.999")),
    ),
    "runtime": (
        _option("overwrite", "overwrite", "bool", False,
                "Replace the run already in --model_dir (the files atalp_tf wrote there go; no other file is "
                "touched). Without it, an unfinished run with the same flags resumes, and any other run's "
                "directory is refused."),
        _option("checkpoint_steps", "checkpoint_steps", "integer", 0,
                "Also save the resumable state every this many steps (0: at each epoch's end only).", lower=0),
        _option("val_steps", "val_steps", "integer", 10,
                "PGD steps of the validation attack after each validated epoch (picks the best epoch and "
                "feeds the overfitting guard); the test at the end uses --eval_steps.", lower=1),
        _option("validate_every", "validate_every", "integer", 1,
                "Validate every N epochs (and at the last); the best epoch is among these.", lower=1),
        _option("val_examples", "val_examples", "integer", 0,
                "Validate on a fixed, seeded subset of this many examples (0: the whole split).", lower=0,
                parse=_zero_is_none),
        _option("strategy", "strategy", "enum", "auto",
                "auto: MirroredStrategy over the visible GPUs, or the default strategy without any; "
                "multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG; tpu: TPUStrategy on --tpu.",
                values=choices.STRATEGIES),
        _option("tpu", "tpu", "string", None, "TPU name or address, with --strategy=tpu."),
        _option("jit_compile", "jit_compile", "bool", False, "Compile the train and test steps with XLA."),
        _option("verbose", "verbose", "enum", "auto",
                "Progress: 2 is a line per epoch, 1 also a status line redrawn within the epoch, 0 none; "
                "auto: 1 on a terminal, 2 into a pipe or file.", values=("auto", "0", "1", "2"),
                parse=lambda value: value if value == "auto" else int(value)),
    ),
}

# Settings the command line does not offer, and why.
INTERNAL = {
    "export": "the command always writes export/; a library caller (a benchmark) may skip it",
    "train_attack.targeted": "a training attack moves away from the true labels",
    "eval_attack.targeted": "the test attack moves away from the true labels",
    "eval_attack.loss": "the test attack raises the cross-entropy, as the validation's does",
}

OPTIONS = tuple(option for options in GROUPS.values() for option in options)
FLAG_NAMES = tuple(option.flag for option in OPTIONS)
_BY_FIELD = {field: option for option in OPTIONS for field in option.fields}


def flag_of(field):
    """The flag that gives the setting at ``field`` (``data.name``: ``dataset``); a setting
    with no flag keeps its own last name."""
    option = _BY_FIELD.get(field)
    return option.flag if option else field.rsplit(".", 1)[-1]


def is_pixel(field):
    """Whether ``field`` is a pixel quantity, written as a fraction of 255 (``8/255``)."""
    option = _BY_FIELD.get(field)
    return option is not None and option.kind == "pixel"


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
    if is_pixel(field) and isinstance(value, float):
        return pixels.fraction(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def differences(saved, current):
    """``["`batch_size`: 128 then, 8 now", ...]`` for the settings that differ, named by their
    flags; ``saved`` and ``current`` are flat settings (``TrainConfig.identity``)."""
    saved, current = _flatten(saved), _flatten(current)
    lines = {}
    for field in sorted(set(saved) | set(current)):
        then, now = saved.get(field), current.get(field)
        if then != now:
            flag = flag_of(field)
            lines.setdefault(flag, f"`{flag}`: {_show(field, then)} then, {_show(field, now)} now")
    return list(lines.values())


def settings(values):
    """The settings the flags' ``values`` (``{flag: value}``, the command's parsed flags) give,
    as ``{path: value}`` (``TrainConfig.from_settings`` makes the configuration of them)."""
    given = {}
    for option in OPTIONS:
        value = values[option.flag]
        value = option.parse(value) if option.parse else value
        given.update(dict.fromkeys(option.fields, value))
    return given
