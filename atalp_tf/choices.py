"""The names the library accepts, importable without TensorFlow so the CLIs can validate fast."""

METHODS = ("standard", "pat", "alp", "at", "at_alp", "trades")
# Methods that put a clean and an adversarial half through the training pass, and those of
# them whose cross-entropy may take a clean share (TRADES has its own clean CE).
PAIRED_METHODS = ("alp", "at", "at_alp", "trades")
CLEAN_CE_METHODS = ("alp", "at", "at_alp")
# How the train step makes its adversarial examples: k-step PGD, FGSM from a random start
# (Wong et al. 2020) or free adversarial training's replayed batches (Shafahi et al. 2019).
TRAIN_ATTACKS = ("pgd", "fgsm_rs", "free")
OVERFIT_GUARDS = ("auto", "stop", "warn", "off")
# How the clean and adversarial halves meet batch norm in training: as one batch of 2B
# (Kannan et al.'s ALP), or as two batches with their own statistics (TRADES' reference);
# auto picks each method's reference.
BN_BATCHES = ("auto", "joint", "separate")
# decoupled: Keras' optimizer weight decay (w -= lr * wd * w); l2: the PyTorch recipes' coupled
# decay, an L2 term whose gradient wd * w goes through momentum with the loss's.
WEIGHT_DECAY_TYPES = ("decoupled", "l2")
ARCHITECTURES = ("resnet18", "resnet50", "resnet101", "resnet152")
# The smallest image side each takes: resnet18 halves it three times (CIFAR-style stem);
# keras.applications ResNets refuse anything under 32.
MIN_IMAGE_SIZE = {"resnet18": 8, "resnet50": 32, "resnet101": 32, "resnet152": 32}
# Besides these, "tfds:NAME" names any TensorFlow Datasets image classification set.
DATASETS = ("digits", "cifar10", "flowers17", "folder")
# The image side of the array sets when --image_size leaves it (file sets need one).
NATIVE_IMAGE_SIZE = {"digits": 8, "cifar10": 32}
AUGMENTATIONS = ("auto", "none", "flip", "pad_crop", "resized_crop")
BAD_IMAGE_POLICIES = ("stop", "skip")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
SCHEDULES = ("cosine", "step", "onecycle", "constant")

# What a training run leaves in its model_dir. A directory holding any of these belongs to an
# earlier run: it is resumed if that run had the same configuration and had not finished,
# and otherwise kept unless the user asks for --overwrite.
RUN_ARTIFACTS = (
    "run_config.json", "resume", "checkpoints", "logs", "split.json",
    "model.keras", "export", "results.json",
)
# Those that mark a finished run.
FINISHED_RUN_ARTIFACTS = ("results.json", "export", "model.keras")
# The models a run's model_dir holds: model.keras (final), checkpoints/best.keras, checkpoints/last.keras.
CHECKPOINTS = ("final", "best", "last")
# Evaluations written into a run's model_dir (atalp_tf.evaluate's default --out_dir, and the
# reproduce suites' last- and best-epoch ones); replacing the run removes them too.
RUN_EVALUATIONS = ("evaluation", "evaluation_best")

# The paper's tables that atalp_tf.reproduce runs (atalp_tf.suites defines each).
SUITE_NAMES = ("table1", "table2-flowers17", "table2-imagenet4", "table2-dogs-vs-cats", "table3", "cpu-flowers")

# Attacks of the evaluation (atalp_tf.robustness), in the order reports list them.
ATTACKS = ("fgsm", "pgd", "pgd_targeted", "apgd_ce", "apgd_t", "fab_t", "square", "rays", "autoattack")
# What `atalp_tf.evaluate` runs unless --attacks says otherwise: everything but the standard
# AutoAttack, whose fixed budget (100 iterations, 9 targets, 5,000 queries) takes far longer.
DEFAULT_ATTACKS = ("fgsm", "pgd", "pgd_targeted", "apgd_ce", "apgd_t", "square", "rays")
