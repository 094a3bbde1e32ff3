"""Any TensorFlow Datasets image classification set, ``tfds:NAME`` (needs tensorflow-datasets).

Sets with a test split use it (and ``validation`` when present, else 10% of train); sets with
only a train split are cut 80/10/10. ``data_dir`` is TFDS' data directory.
"""

import tensorflow as tf

from atalp_tf.datasets import pipeline
from atalp_tf.datasets.config import Splits


def splits(config):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            f"dataset {config.name!r} needs TensorFlow Datasets: pip install 'atalp_tf[tfds]'"
        ) from error
    name = config.name.split(":", 1)[1]
    builder = tfds.builder(name, data_dir=config.data_dir)
    builder.download_and_prepare()
    splits = builder.info.splits
    if "test" in splits:
        wanted = {"train": "train[:90%]", "val": "train[90%:]", "test": "test"}
        if "validation" in splits:
            wanted["train"], wanted["val"] = "train", "validation"
    else:
        wanted = {"train": "train[:80%]", "val": "train[80%:90%]", "test": "train[90%:]"}
    label = builder.info.features["label"]
    size = config.image_size

    def to_rgb(image, target):
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        if size:
            resized = tf.image.resize(image, (size, size), antialias=True)
            image = tf.saturate_cast(tf.round(resized), tf.uint8)
        return image, tf.cast(target, tf.int32)

    def examples(part):
        dataset = builder.as_dataset(split=wanted[part], as_supervised=True, shuffle_files=False)
        dataset = dataset.map(to_rgb, num_parallel_calls=tf.data.AUTOTUNE)
        return pipeline.cache(dataset, config.cache)

    train_prepare, eval_prepare = pipeline.array_preparation(
        "flip" if config.augment == "auto" else config.augment
    )
    sizes = {part: int(splits[spec].num_examples) for part, spec in wanted.items()}
    shape = builder.info.features["image"].shape
    return Splits(
        train_stream=pipeline.TrainStream(
            examples("train"), sizes["train"], config.batch_size, config.seed, train_prepare
        ),
        val=pipeline.evaluation(examples("val"), config.batch_size, eval_prepare),
        test=pipeline.evaluation(examples("test"), config.batch_size, eval_prepare),
        num_classes=label.num_classes,
        image_shape=(size or shape[0], size or shape[1], 3),
        class_names=tuple(label.names),
        sizes=sizes,
    )
