r"""Train a robust classifier: ``python -m atalp_tf.train --flagfile=flags/NAME.cfg``.

Every flag is validated before TensorFlow is imported, so a mistake fails at once with a
message that names the flag. Pixel quantities (``--eps``, ``--step_size``) are in the [0, 1]
pixel range and take fractions: ``--eps=8/255``.
"""

import os
import warnings

from absl import app
from absl import flags

from atalp_tf import choices
from atalp_tf import cli
from atalp_tf.cli import DEFINE_pixel_value
from atalp_tf.errors import Advice
from atalp_tf.runs.rundir import RunDir

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Directory for checkpoints, TensorBoard logs and the export.", required=True
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Replace the run already in --model_dir (the files atalp_tf wrote there go; no other file is "
    "touched). Without it, an unfinished run with the same flags resumes, and any other run's "
    "directory is refused.",
)
_CHECKPOINT_STEPS = flags.DEFINE_integer(
    "checkpoint_steps", 0,
    "Also save the resumable state every this many steps (0: at each epoch's end only).",
    lower_bound=0,
)
_DATASET = flags.DEFINE_string(
    "dataset",
    "digits",
    f"One of {', '.join(choices.DATASETS)}, or tfds:NAME for a TensorFlow Datasets set.",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Directory of flowers17 or folder data (TFDS' data_dir for tfds:NAME)."
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 0, "Square side of the model's input; 0 keeps an array set's native size.",
    lower_bound=0,
)
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", 0, "Expected class count; the run stops if the data has another (0: any).",
    lower_bound=0,
)
_AUGMENT = flags.DEFINE_enum(
    "augment", "auto", choices.AUGMENTATIONS,
    "Training augmentation; auto picks resized_crop for files, pad_crop for CIFAR-10.",
)
_BAD_IMAGES = flags.DEFINE_enum(
    "bad_images", "stop", choices.BAD_IMAGE_POLICIES,
    "On unreadable image files: stop and list them, or skip them and report the count.",
)
_CACHE = flags.DEFINE_string(
    "cache", "", "Cache decoded images: '' (off), 'memory', or a file path prefix."
)
_SPLIT_FILE = flags.DEFINE_string(
    "split_file", None, "split.json of an earlier run, to train and test on the same images."
)
_SPLIT_INDEX = flags.DEFINE_integer(
    "split_index", 1, "Which of datasplits.mat's 17 Flowers splits to use.", lower_bound=1,
    upper_bound=3,
)

_ARCHITECTURE = flags.DEFINE_string(
    "architecture", "resnet18",
    f"Backbone: {choices.ARCHITECTURE_NAMES} (pip install -e '.[hub]'; its weights come with it).",
)
flags.register_validator(
    "architecture", choices.is_architecture, f"--architecture must be {choices.ARCHITECTURE_NAMES}"
)
_WIDTH = flags.DEFINE_integer(
    "width", 64, "Channels of resnet18's first stage (64 is standard).", lower_bound=1
)
_WEIGHTS = flags.DEFINE_string(
    "weights",
    "none",
    "'none', 'imagenet' (keras.applications ResNets, downloaded on first use), or the path "
    "of a weights file of the headless network.",
)
_SYNC_BN = flags.DEFINE_bool(
    "sync_batchnorm", False, "Share resnet18's batch statistics across replicas."
)

_METHOD = flags.DEFINE_enum("method", "at_alp", choices.METHODS, "Training objective.")
_ALPHA = flags.DEFINE_float("alpha", 0.5, "Weight of logit pairing.", lower_bound=0.0)
_BETA = flags.DEFINE_float("beta", 1.0, "Weight of attention pairing.", lower_bound=0.0)
_TRADES_BETA = flags.DEFINE_float("trades_beta", 6.0, "Weight of TRADES' KL.", lower_bound=0.0)
_CLEAN_CE_WEIGHT = flags.DEFINE_float(
    "clean_ce_weight", 0.0,
    "alp, at, at_alp: share of clean cross-entropy, (1 - w) CE(x_adv) + w CE(x); 0.5 is Kannan "
    "et al.'s mixed batch, 0 the adversarial CE alone.",
    lower_bound=0.0, upper_bound=1.0,
)
_BN_BATCHES = flags.DEFINE_enum(
    "bn_batches", "auto", choices.BN_BATCHES,
    "Pairing methods and trades: batch norm on one 2B batch of clean and adversarial examples "
    "(joint, Kannan et al.'s ALP) or on each half alone (separate, TRADES' reference); auto: "
    "separate for trades, joint otherwise.",
)

_EPS = DEFINE_pixel_value("eps", "8/255", "Training perturbation size (L-inf or L2).")
_STEP_SIZE = DEFINE_pixel_value(
    "step_size", None,
    "Training attack step size (default: eps / 4 for pgd, 1.25 * eps for fgsm_rs, eps for free and n_fgsm).",
)
_ATTACK_STEPS = flags.DEFINE_integer("attack_steps", 7, "Training PGD steps (--attack=pgd).", lower_bound=1)
_ATTACK = flags.DEFINE_enum(
    "attack", "pgd", choices.TRAIN_ATTACKS,
    "How training makes adversarial examples: pgd (--attack_steps steps), fgsm_rs (one step "
    "from a random start, Wong et al. 2020), free (each batch replayed --free_replays times, "
    "Shafahi et al. 2019) or n_fgsm (one step of eps from noise in [-2 eps, 2 eps], not projected "
    "back onto the eps ball, de Jorge et al. 2022).",
)
_FREE_REPLAYS = flags.DEFINE_integer(
    "free_replays", 4, "--attack=free: optimizer steps (and attack steps) per batch.", lower_bound=1
)
_OVERFIT_GUARD = flags.DEFINE_enum(
    "overfit_guard", "auto", choices.OVERFIT_GUARDS,
    "What to do when validation PGD accuracy collapses (catastrophic overfitting): stop "
    "(keep the best epoch's weights), warn, or off. auto: stop for the single-step attacks, off for pgd.",
)
_NORM = flags.DEFINE_enum("norm", "linf", choices.NORMS, "Perturbation norm.")
_RANDOM_START = flags.DEFINE_bool("random_start", True, "Start PGD at a random point in the ball.")
_ATTACK_LOSS = flags.DEFINE_enum("attack_loss", "ce", choices.ATTACK_LOSSES, "Training PGD loss.")
_EVAL_EPS = DEFINE_pixel_value("eval_eps", None, "PGD eps for validation and test (default --eps).")
_EVAL_STEP_SIZE = DEFINE_pixel_value(
    "eval_step_size", None, "PGD step for validation and test (default eval eps / 4)."
)
_EVAL_STEPS = flags.DEFINE_integer("eval_steps", 20, "PGD steps of the test attack.", lower_bound=1)
_VAL_STEPS = flags.DEFINE_integer(
    "val_steps", 10,
    "PGD steps of the validation attack after each validated epoch (picks the best epoch and "
    "feeds the overfitting guard); the test at the end uses --eval_steps.",
    lower_bound=1,
)
_VALIDATE_EVERY = flags.DEFINE_integer(
    "validate_every", 1, "Validate every N epochs (and at the last); the best epoch is among these.",
    lower_bound=1,
)
_VAL_EXAMPLES = flags.DEFINE_integer(
    "val_examples", 0, "Validate on a fixed, seeded subset of this many examples (0: the whole split).",
    lower_bound=0,
)

_EPOCHS = flags.DEFINE_integer("epochs", 100, "Training epochs.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 128, "Global batch size, split across replicas.", lower_bound=1
)
_OPTIMIZER = flags.DEFINE_enum("optimizer", "sgd", choices.OPTIMIZERS, "Optimizer.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.1, "Peak learning rate.", lower_bound=0.0)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=1.0)
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 5e-4, "Weight decay (see --weight_decay_type).", lower_bound=0.0)
_WEIGHT_DECAY_TYPE = flags.DEFINE_enum(
    "weight_decay_type", "decoupled", choices.WEIGHT_DECAY_TYPES,
    "l2: an L2 term whose gradient wd * w goes through momentum with the loss's, on every "
    "weight (PyTorch's SGD weight_decay, as in the Madry and TRADES recipes); decoupled: "
    "w -= lr * wd * w each step, sparing batch norm and biases (Keras' optimizer weight_decay; "
    "with momentum 0.9 about 10x weaker than l2 at the same number).",
)
_SCHEDULE = flags.DEFINE_enum(
    "schedule", "cosine", choices.SCHEDULES,
    "Learning-rate schedule: cosine to 0; step (--lr_boundaries); onecycle (linear up to "
    "--learning_rate over 2/5 of the run, then down to 0: Wong et al.'s fast training); constant.",
)
_LR_BOUNDARIES = flags.DEFINE_list(
    "lr_boundaries", [], "Epochs at which the step schedule multiplies the rate by --lr_decay."
)
_LR_DECAY = flags.DEFINE_float("lr_decay", 0.1, "Factor of the step schedule.", lower_bound=0.0)
_EMA_MOMENTUM = flags.DEFINE_float(
    "ema_momentum", 0.0,
    "Weight averaging: momentum of the moving average of the weights and batch norm statistics "
    "(0: off; 0.999 is usual). Validation, the best epoch, the saved models and the export use "
    "the average.",
)
flags.register_validator("ema_momentum", lambda m: 0 <= m < 1, "--ema_momentum must be in [0, 1), e.g. 0.999")

_PRECISION = flags.DEFINE_enum(
    "precision", "float32", choices.PRECISIONS, "Keras dtype policy."
)
_STRATEGY = flags.DEFINE_enum(
    "strategy",
    "auto",
    choices.STRATEGIES,
    "auto: MirroredStrategy over the visible GPUs, or the default strategy without any; "
    "multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG; tpu: TPUStrategy on --tpu.",
)
_TPU = flags.DEFINE_string("tpu", None, "TPU name or address, with --strategy=tpu.")
_JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "Compile the train and test steps with XLA."
)
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic", False,
    "Make TensorFlow ops deterministic (slower), so a run can be repeated exactly.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, data split, shuffling and attacks.")
_VERBOSE = flags.DEFINE_enum(
    "verbose", "auto", ("auto", "0", "1", "2"),
    "Progress: 2 is a line per epoch, 1 also a status line redrawn within the epoch, 0 none; "
    "auto: 1 on a terminal, 2 into a pipe or file.",
)


@flags.validator("weights", "--weights must be 'none', 'imagenet' or an existing file")
def _check_weights(value):
    return value in ("none", "imagenet") or os.path.isfile(value)


@flags.multi_flags_validator(
    ["weights", "architecture"],
    "--weights needs --architecture=resnet50, resnet101 or resnet152; resnet18 trains from scratch, "
    "and a keras-hub preset brings its own weights",
)
def _check_pretrained(values):
    architecture = values["architecture"]
    return values["weights"] == "none" or (architecture != "resnet18" and not choices.is_hub_preset(architecture))


flags.register_validator("dataset", choices.is_dataset, f"--dataset must be {choices.DATASET_NAMES}")


@flags.multi_flags_validator(
    ["dataset", "data_dir"], "--dataset=flowers17 and --dataset=folder need an existing --data_dir"
)
def _check_data_dir(values):
    if values["dataset"] not in choices.FILE_DATASETS:
        return True
    return bool(values["data_dir"]) and os.path.isdir(values["data_dir"])


@flags.multi_flags_validator(
    ["dataset", "image_size"], "--dataset=flowers17, folder and tfds:NAME need --image_size"
)
def _check_image_size(values):
    return values["dataset"] in choices.ARRAY_DATASETS or values["image_size"] > 0


@flags.multi_flags_validator(
    ["architecture", "image_size", "dataset"], "--image_size is too small for --architecture"
)
def _check_size_for_architecture(values):
    size = values["image_size"] or choices.NATIVE_IMAGE_SIZE.get(values["dataset"])
    least = choices.min_image_size(values["architecture"])
    if size and size < least:
        given = (
            f"--image_size={size}" if values["image_size"]
            else f"--dataset={values['dataset']} is {size}x{size} unless --image_size says otherwise"
        )
        raise flags.ValidationError(
            f"--architecture={values['architecture']} takes images of at least {least}x{least}, and "
            f"{given}: pass --image_size={least} or more, or --architecture=resnet18"
        )
    return True


cli.require_existing("split_file", "file", "be an existing split.json")


@flags.multi_flags_validator(
    ["strategy", "tpu"], "--strategy=tpu needs --tpu, the TPU's name or address"
)
def _check_tpu(values):
    return values["strategy"] != "tpu" or bool(values["tpu"])


@flags.validator("lr_boundaries", "--lr_boundaries must be increasing positive epoch numbers")
def _check_boundaries(value):
    try:
        epochs = [int(v) for v in value]
    except ValueError:
        return False
    return epochs == sorted(set(epochs)) and all(e > 0 for e in epochs)


@flags.multi_flags_validator(
    ["schedule", "lr_boundaries"], "--schedule=step needs --lr_boundaries, e.g. 100,150"
)
def _check_step_schedule(values):
    return values["schedule"] != "step" or bool(values["lr_boundaries"])


@flags.multi_flags_validator(
    ["clean_ce_weight", "method"], f"--clean_ce_weight applies to --method={', '.join(choices.CLEAN_CE_METHODS)}"
)
def _check_clean_ce(values):
    return not values["clean_ce_weight"] or values["method"] in choices.CLEAN_CE_METHODS


@flags.multi_flags_validator(
    ["bn_batches", "method"], f"--bn_batches=separate applies to --method={', '.join(choices.PAIRED_METHODS)}"
)
def _check_bn_batches(values):
    return values["bn_batches"] != "separate" or values["method"] in choices.PAIRED_METHODS


@flags.multi_flags_validator(
    ["attack", "method"], "--attack=fgsm_rs, free or n_fgsm needs an adversarial --method (not standard)"
)
def _check_attack_method(values):
    return values["attack"] == "pgd" or choices.OBJECTIVES[values["method"]].adversarial


@flags.validator("model_dir", "--model_dir must be a directory path, not an existing file")
def _check_model_dir(value):
    return value is None or not os.path.isfile(value)


@flags.multi_flags_validator(
    ["model_dir", "overwrite"],
    f"--model_dir already holds a finished run ({RunDir.RESULTS} is there): choose another "
    "directory, or pass --overwrite to replace it",
)
def _check_no_clobber(values):
    # A run in progress with the same configuration resumes; the trainer checks that.
    return values["overwrite"] or not values["model_dir"] or not RunDir(values["model_dir"]).finished()


def _config_from_flags():
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.attacks import training as training_attack
    from atalp_tf.training.config import TrainConfig

    common = dict(norm=_NORM.value, random_start=_RANDOM_START.value)
    train_attack = None
    if choices.OBJECTIVES[_METHOD.value].adversarial:
        train_attack = training_attack.config(
            _ATTACK.value, _EPS.value, step_size=_STEP_SIZE.value, steps=_ATTACK_STEPS.value,
            loss=_ATTACK_LOSS.value, **common,
        )
    eval_eps = _EVAL_EPS.value or _EPS.value
    eval_attack = PGDConfig(eval_eps, _EVAL_STEP_SIZE.value or eval_eps / 4, _EVAL_STEPS.value, **common)
    for message in training_attack.advice(_ATTACK.value, train_attack) + training_attack.advice("eval", eval_attack):
        warnings.warn(Advice(message), stacklevel=2)
    return TrainConfig.from_flat(
        model_dir=_MODEL_DIR.value,
        data=dict(
            name=_DATASET.value, batch_size=_BATCH_SIZE.value, data_dir=_DATA_DIR.value,
            image_size=_IMAGE_SIZE.value or None, augment=_AUGMENT.value,
            bad_images=_BAD_IMAGES.value, cache=_CACHE.value, split_file=_SPLIT_FILE.value,
            split_index=_SPLIT_INDEX.value,
        ),
        num_classes=_NUM_CLASSES.value or None,
        architecture=_ARCHITECTURE.value,
        width=_WIDTH.value,
        weights=None if _WEIGHTS.value == "none" else _WEIGHTS.value,
        synchronized_bn=_SYNC_BN.value,
        precision=_PRECISION.value,
        method=_METHOD.value,
        alpha=_ALPHA.value,
        beta=_BETA.value,
        trades_beta=_TRADES_BETA.value,
        clean_ce_weight=_CLEAN_CE_WEIGHT.value,
        bn_batches=_BN_BATCHES.value,
        train_attack=train_attack,
        eval_attack=eval_attack,
        attack=_ATTACK.value,
        free_replays=_FREE_REPLAYS.value,
        overfit_guard=_OVERFIT_GUARD.value,
        epochs=_EPOCHS.value,
        optimizer=_OPTIMIZER.value,
        learning_rate=_LEARNING_RATE.value,
        momentum=_MOMENTUM.value,
        weight_decay=_WEIGHT_DECAY.value,
        weight_decay_type=_WEIGHT_DECAY_TYPE.value,
        schedule=_SCHEDULE.value,
        lr_boundaries=tuple(int(b) for b in _LR_BOUNDARIES.value),
        lr_decay=_LR_DECAY.value,
        ema_momentum=_EMA_MOMENTUM.value,
        strategy=_STRATEGY.value,
        tpu=_TPU.value,
        jit_compile=_JIT_COMPILE.value,
        checkpoint_steps=_CHECKPOINT_STEPS.value,
        overwrite=_OVERWRITE.value,
        verbose=_VERBOSE.value if _VERBOSE.value == "auto" else int(_VERBOSE.value),
        val_steps=_VAL_STEPS.value,
        validate_every=_VALIDATE_EVERY.value,
        val_examples=_VAL_EXAMPLES.value or None,
        seed=_SEED.value,
        deterministic=_DETERMINISTIC.value,
    )


_GROUPS = {
    "data": ["dataset", "data_dir", "image_size", "batch_size", "augment", "cache", "bad_images",
             "split_file", "split_index", "num_classes"],
    "model": ["architecture", "width", "weights", "sync_batchnorm"],
    "objective": ["method", "alpha", "beta", "trades_beta", "clean_ce_weight", "bn_batches"],
    "attack": ["eps", "step_size", "attack", "attack_steps", "free_replays", "norm", "random_start",
               "attack_loss", "eval_eps", "eval_step_size", "eval_steps", "overfit_guard"],
    "validation": ["val_steps", "validate_every", "val_examples"],
    "optimisation": ["epochs", "optimizer", "learning_rate", "momentum", "weight_decay",
                     "weight_decay_type", "schedule", "lr_boundaries", "lr_decay", "ema_momentum", "precision"],
    "run": ["model_dir", "overwrite", "checkpoint_steps", "seed", "deterministic", "strategy", "tpu",
            "jit_compile", "verbose"],
}


def _train(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _config_from_flags()
    from atalp_tf import atomic
    from atalp_tf.training import trainer

    atomic.stop_point("imports")
    print(cli.as_flags("\n".join(trainer.summary(trainer.run(config, log=cli.log)))))


if __name__ == "__main__":
    app.run(cli.command("atalp_tf.train", _train, __doc__, _GROUPS))
