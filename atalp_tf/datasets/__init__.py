"""Input pipelines: ``load(name, ...)`` returns batched (pixels, label) datasets.

Pixels are float32 in [0, 1], the range every model and attack in the package works in.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from atalp_tf.choices import DATASETS
from atalp_tf.datasets import digits
from atalp_tf.datasets.splits import stratified_split



@dataclasses.dataclass(frozen=True)
class Splits:
    """Batched train/val/test datasets and what the model needs to know about them."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    image_shape: tuple
    class_names: tuple
    sizes: dict


def _resize(images, image_size):
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    resized = tf.image.resize(images, (image_size, image_size), method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0).numpy()


def _pipeline(images, labels, batch_size, shuffle_seed=None):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    # A short last training batch gives batch norm noisy statistics; evaluation keeps it.
    dataset = dataset.batch(batch_size, drop_remainder=shuffle_seed is not None)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load(name, *, batch_size, image_size=None, seed=0, split_fractions=(0.7, 0.1, 0.2)):
    """Batched splits of dataset ``name`` at the global ``batch_size``.

    Args:
        name: one of ``atalp_tf.choices.DATASETS``.
        batch_size: global batch size (split across replicas by Keras).
        image_size: resize to a square of this side; None keeps the native size.
        seed: seed of the stratified split and of the shuffling.
        split_fractions: train/val/test fractions of each class.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}")
    images, labels = digits.load_arrays()
    images = _resize(images, image_size)
    train, val, test = stratified_split(labels, split_fractions, seed)
    if len(train) < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {len(train)} training images of {name!r}"
        )
    return Splits(
        train=_pipeline(images[train], labels[train], batch_size, shuffle_seed=seed),
        val=_pipeline(images[val], labels[val], batch_size),
        test=_pipeline(images[test], labels[test], batch_size),
        num_classes=digits.NUM_CLASSES,
        image_shape=tuple(images.shape[1:]),
        class_names=digits.CLASS_NAMES,
        sizes={"train": len(train), "val": len(val), "test": len(test)},
    )
