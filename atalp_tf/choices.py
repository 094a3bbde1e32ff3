"""The names the library accepts, each list defined once, importable without TensorFlow so the
command lines can validate flags before any work starts."""

import os
import typing


class Objective(typing.NamedTuple):
    """What a training method needs, beside its loss (``atalp_tf.models.objectives``).

    adversarial: it trains on examples the attack makes.
    paired: it puts a clean and an adversarial half through the training pass (so batch norm
        meets both: ``bn_batches``).
    clean_ce: its cross-entropy may take a clean share (``clean_ce_weight``).
    bn_batches: how its reference runs the halves through batch norm (``BN_BATCHES``).
    attack_loss: what its training attack increases: ``"ce"``, the cross-entropy of the
        labels, or ``"kl"``, the KL divergence from the clean prediction (TRADES, whose attack
        starts next to x, where that KL has no gradient).
    attention: its loss pairs the attention maps of the network's stages.
    """

    adversarial: bool
    paired: bool
    clean_ce: bool
    bn_batches: str = "joint"
    attack_loss: str = "ce"
    attention: bool = False


# The training objectives. Adding a method: a row here and its loss in models/objectives.py.
OBJECTIVES = {
    "standard": Objective(adversarial=False, paired=False, clean_ce=False),
    "pat": Objective(adversarial=True, paired=False, clean_ce=False),
    "alp": Objective(adversarial=True, paired=True, clean_ce=True),
    "at": Objective(adversarial=True, paired=True, clean_ce=True, attention=True),
    "at_alp": Objective(adversarial=True, paired=True, clean_ce=True, attention=True),
    "trades": Objective(adversarial=True, paired=True, clean_ce=False, bn_batches="separate", attack_loss="kl"),
}
METHODS = tuple(OBJECTIVES)
PAIRED_METHODS = tuple(m for m, o in OBJECTIVES.items() if o.paired)
CLEAN_CE_METHODS = tuple(m for m, o in OBJECTIVES.items() if o.clean_ce)
# How the train step makes its adversarial examples: k-step PGD, FGSM from a random start
# (Wong et al. 2020), free adversarial training's replayed batches (Shafahi et al. 2019) or
# FGSM from wider noise without projection (N-FGSM, de Jorge et al. 2022).
TRAIN_ATTACKS = ("pgd", "fgsm_rs", "free", "n_fgsm")
# What the catastrophic-overfitting guard does on a collapse; auto: stop for the single-step kinds.
OVERFIT_GUARD_ACTIONS = ("stop", "warn")
OVERFIT_GUARDS = ("auto", *OVERFIT_GUARD_ACTIONS, "off")
# How the clean and adversarial halves meet batch norm in training: as one batch of 2B
# (Kannan et al.'s ALP), or as two batches with their own statistics (TRADES' reference);
# auto picks each method's reference.
BN_BATCHES = ("auto", "joint", "separate")


def resolve_bn_batches(method, bn_batches):
    """``bn_batches`` with ``auto`` replaced by the method's reference (separate for TRADES)."""
    return OBJECTIVES[method].bn_batches if bn_batches == "auto" else bn_batches
# decoupled: Keras' optimizer weight decay (w -= lr * wd * w); l2: the PyTorch recipes' coupled
# decay, an L2 term whose gradient wd * w goes through momentum with the loss's.
WEIGHT_DECAY_TYPES = ("decoupled", "l2")
ARCHITECTURES = ("resnet18", "resnet50", "resnet101", "resnet152")
# Besides these, a keras-hub ResNet preset: "hub:NAME" (a preset keras-hub knows, such as
# hub:resnet_50_imagenet), a kaggle:// or hf:// handle, or a local preset directory.
HUB_PREFIX = "hub:"
ARCHITECTURE_NAMES = (f"one of {', '.join(ARCHITECTURES)}, or a keras-hub ResNet preset: {HUB_PREFIX}NAME, "
                      "a kaggle:// or hf:// handle, or a preset directory")


def is_hub_preset(name):
    """Whether ``name`` names a keras-hub preset rather than one of ``ARCHITECTURES``."""
    return name.startswith(HUB_PREFIX) or "://" in name or (name not in ARCHITECTURES and os.path.isdir(name))


def is_architecture(name):
    return name in ARCHITECTURES or is_hub_preset(name)


# The smallest image side each takes: resnet18 halves it three times (CIFAR-style stem);
# keras.applications ResNets refuse anything under 32, and keras-hub's stem divides by 32 too.
MIN_IMAGE_SIZE = {"resnet18": 8, "resnet50": 32, "resnet101": 32, "resnet152": 32}
HUB_MIN_IMAGE_SIZE = 32


def min_image_size(architecture):
    return MIN_IMAGE_SIZE.get(architecture, HUB_MIN_IMAGE_SIZE)
# Besides these, "tfds:NAME" names any TensorFlow Datasets image classification set.
ARRAY_DATASETS = ("digits", "cifar10")  # held in memory whole; their images have a native size
FILE_DATASETS = ("flowers17", "folder")  # image files under `data_dir`; they need `image_size`
DATASETS = ARRAY_DATASETS + FILE_DATASETS
DATASET_NAMES = f"one of {', '.join(DATASETS)}, or tfds:NAME for a TensorFlow Datasets set"


def is_dataset(name):
    """Whether ``name`` names a dataset: one of ``DATASETS`` or ``tfds:NAME``."""
    return name in DATASETS or (name.startswith("tfds:") and len(name) > 5)


# The image side of the array sets when --image_size leaves it (file sets need one).
NATIVE_IMAGE_SIZE = {"digits": 8, "cifar10": 32}
AUGMENTATIONS = ("auto", "none", "flip", "pad_crop", "resized_crop")
BAD_IMAGE_POLICIES = ("stop", "skip")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = ("sgd", "adamw")
# PGD's perturbation norms and the losses it can increase (cross-entropy, Carlini-Wagner margin).
NORMS = ("linf", "l2")
ATTACK_LOSSES = ("ce", "margin")
SCHEDULES = ("cosine", "step", "onecycle", "constant")

# The paper's tables that atalp_tf.reproduce runs (atalp_tf.reproduction.suites defines each).
SUITE_NAMES = ("table1", "table2-flowers17", "table2-imagenet4", "table2-dogs-vs-cats", "table3", "cpu-flowers")

# Attacks of the evaluation (atalp_tf.evaluation.robustness), in the order reports list them.
GRADIENT_ATTACKS = ("fgsm", "pgd", "pgd_targeted", "apgd_ce", "apgd_t", "fab_t")
GRADIENT_FREE_ATTACKS = ("square", "rays")  # scores only; labels only
ATTACKS = GRADIENT_ATTACKS + GRADIENT_FREE_ATTACKS + ("autoattack",)
# What `atalp_tf.evaluate` runs unless --attacks says otherwise: everything but the standard
# AutoAttack, whose fixed budget (100 iterations, 9 targets, 5,000 queries) takes far longer.
DEFAULT_ATTACKS = ("fgsm", "pgd", "pgd_targeted", "apgd_ce", "apgd_t", "square", "rays")
