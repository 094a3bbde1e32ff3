"""Input pipelines: ``load(DataConfig)`` returns batched (pixels, label) datasets.

Pixels are float32 in [0, 1], the range every model and attack in the package works in.

Sources (``DataConfig.name``):

* ``digits``: scikit-learn's bundled handwritten digits (offline; the quickstart's);
* ``cifar10``: CIFAR-10 through ``keras.datasets`` (downloaded by Keras on first use), or from
  ``data_dir`` holding ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``
  (a machine without network);
* ``flowers17``: the Oxford 17 Flowers in its official layout under ``data_dir``; its
  ``datasplits.mat`` is used when present, otherwise a seeded stratified 40/20/20 split;
* ``folder``: a class-per-folder tree under ``data_dir`` (Dogs-vs-Cats' PetImages, the
  ImageNet subset that ``data/make_imagenet_subset.py`` builds, any user dataset). With
  ``train/`` and ``val/`` (or ``test/``) sub-trees those are the splits; otherwise a seeded
  stratified 70/10/20 split;
* ``tfds:NAME``: any TensorFlow Datasets image classification set (needs tensorflow-datasets).

Splits drawn from a seed are read back from ``saved_split`` (a run's split file) or
``split_file`` when one exists; otherwise ``Splits.drawn`` holds the drawn split and ``save_split`` writes it (a
training run does that once its directory is claimed), so a run can always be repeated on the
same images. A class too small to appear in every split is reported in ``Splits.notes``.
"""

import dataclasses

import tensorflow as tf

from atalp_tf.choices import ARRAY_DATASETS
from atalp_tf.choices import DATASET_NAMES
from atalp_tf.choices import FILE_DATASETS
from atalp_tf.datasets import arrays
from atalp_tf.datasets import files
from atalp_tf.datasets import tfds
from atalp_tf.datasets.config import DataConfig
from atalp_tf.datasets.config import Splits
from atalp_tf.errors import DataError

__all__ = ["DataConfig", "Splits", "fixed_subset", "load", "save_split"]


def save_split(data, path):
    """Writes the split that ``data`` drew from its seed to ``path``; returns ``data`` with
    ``split_path`` set (unchanged if nothing was drawn)."""
    if data.drawn is None:
        return data
    files.write_split(path, *data.drawn)
    return dataclasses.replace(data, split_path=path, drawn=None)


def fixed_subset(dataset, count, size, seed, batch_size):
    """The same ``count`` examples of a batched ``dataset`` of ``size`` examples every time: a
    seeded shuffle of the whole (its first examples would be one class in a class-sorted split)."""
    examples = dataset.unbatch()
    shuffled = examples.shuffle(size, seed=seed, reshuffle_each_iteration=False)
    return shuffled.take(count).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load(config, saved_split=None):
    """Batched splits of ``config``; ``saved_split``: the file of a split drawn and saved before
    (``save_split``), read back when it exists."""
    if config.name in ARRAY_DATASETS:
        data = arrays.splits(config)
    elif config.name in FILE_DATASETS:
        data = files.splits(config, saved_split)
    elif config.name.startswith("tfds:"):
        data = tfds.splits(config)
    else:
        raise DataError(f"Unknown dataset {config.name!r} (`dataset`): give {DATASET_NAMES}")
    if data.sizes["train"] < config.batch_size:
        raise DataError(
            f"`batch_size={config.batch_size}` is larger than the {data.sizes['train']} training "
            f"images of {config.name!r}: lower it"
        )
    return data
