"""The names the library accepts, importable without TensorFlow so the CLIs can validate fast."""

METHODS = ("standard", "pat", "alp", "at", "at_alp", "trades")
ARCHITECTURES = ("resnet18", "resnet50", "resnet101", "resnet152")
DATASETS = ("digits",)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored")

# What a training run leaves in its model_dir; a directory holding any of these belongs to an
# earlier run and is not reused unless the user says so.
RUN_ARTIFACTS = ("checkpoints", "export", "model.keras", "results.json")
