"""Input pipeline throughput against the AT + ALP training step, on the 17 Flowers.

    python benchmarks/input_pipeline.py --data_dir=$FLOWERS17   # 17 Flowers, as data/README.md says

For each image size it prints the pipeline's images/s (first epoch, decoding every JPEG; and
from the in-memory cache), the images/s of an AT + ALP training step (width-16 ResNet-18,
PGD-7) on batches already in memory, and their ratio. The pipeline is not the bottleneck
when the ratio is well above 1; the target on a 2-core CPU is 5x.
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_DATA_DIR = flags.DEFINE_string("data_dir", None, "17 Flowers in its official layout.", required=True)
_SIZES = flags.DEFINE_list("sizes", ["224", "64"], "Square image sides to measure.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of both measurements.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 20, "Batches timed per pass.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 2, "Training steps timed (after one warm-up).")


def _pipeline_rate(dataset, batches):
    iterator = iter(dataset)
    next(iterator)  # warm-up: thread pools, first decode
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def _train_rate(size, batch, steps):
    import keras
    import numpy as np

    from atalp_tf.attacks import PGDConfig
    from atalp_tf.models import backbones
    from atalp_tf.models.classifier import RobustClassifier

    model = RobustClassifier(
        backbones.resnet18(17, (size, size, 3), width=16),
        method="at_alp",
        train_attack=PGDConfig(4 / 255, 1 / 255, 7),
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 17, batch).astype("int32")
    model.train_on_batch(x, y)  # warm-up: tracing
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def main(argv):
    del argv
    from atalp_tf import datasets
    from atalp_tf.runs.rundir import RunDir

    if not os.path.isdir(os.path.join(_DATA_DIR.value, "jpg")):
        sys.exit(f"No 17 Flowers at {_DATA_DIR.value}; pass --data_dir")
    batch = _BATCH_SIZE.value
    print(f"batch {batch}, {os.cpu_count()} CPU cores")
    print(f"{'size':>5} {'decode img/s':>13} {'cached img/s':>13} {'train img/s':>12} {'ratio':>7}")
    for size in map(int, _SIZES.value):
        with tempfile.TemporaryDirectory() as workdir:
            config = datasets.DataConfig(
                "flowers17", batch_size=batch, data_dir=_DATA_DIR.value, image_size=size,
                augment="resized_crop",
            )
            split = RunDir(workdir).file(RunDir.SPLIT)
            cold = _pipeline_rate(datasets.load(config, split).train, _PIPELINE_BATCHES.value)
            cached_config = datasets.DataConfig(**{**config.__dict__, "cache": "memory"})
            data = datasets.load(cached_config, split)
            for _ in data.train:  # fill the cache
                pass
            warm = _pipeline_rate(data.train, _PIPELINE_BATCHES.value)
        train = _train_rate(size, batch, _TRAIN_STEPS.value)
        print(f"{size:>5} {cold:>13.0f} {warm:>13.0f} {train:>12.1f} {cold / train:>6.0f}x")


if __name__ == "__main__":
    app.run(main)
