"""The names the library accepts, importable without TensorFlow so the CLIs can validate fast."""

METHODS = ("standard", "pat", "alp", "at", "at_alp", "trades")
ARCHITECTURES = ("resnet18", "resnet50", "resnet101", "resnet152")
# Besides these, "tfds:NAME" names any TensorFlow Datasets image classification set.
DATASETS = ("digits", "cifar10", "flowers17", "folder")
AUGMENTATIONS = ("auto", "none", "flip", "pad_crop", "resized_crop")
BAD_IMAGE_POLICIES = ("stop", "skip")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored")

# What a training run leaves in its model_dir; a directory holding any of these belongs to an
# earlier run and is not reused unless the user says so.
RUN_ARTIFACTS = ("checkpoints", "export", "model.keras", "results.json")
