"""The array sources, held in memory whole: scikit-learn's bundled digits and CIFAR-10.

CIFAR-10 comes through ``keras.datasets`` (downloaded by Keras on first use), or from
``data_dir`` holding ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/`` on a
machine without network. Its official test set is the test split, and 10% of the training set,
drawn from the seed, validates; the digits are split 70/10/20 by the seed.
"""

import os
import pickle
import tarfile

import numpy as np
import tensorflow as tf

from atalp_tf.datasets import digits
from atalp_tf.datasets import pipeline
from atalp_tf.datasets.config import Splits
from atalp_tf.datasets.splits import stratified_split
from atalp_tf.errors import DataError
from atalp_tf.errors import MissingPath


def _resize_arrays(images, image_size):
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    resized = tf.image.resize(images, (image_size, image_size), antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0).numpy()


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _cifar10_batch(handle):
    batch = pickle.load(handle, encoding="bytes")
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b"labels"], np.int32)


def _cifar10_local(data_dir):
    """The six batches from ``data_dir``: cifar-10-python.tar.gz, or the folder it unpacks to."""
    archive = os.path.join(data_dir, "cifar-10-python.tar.gz")
    for folder in (data_dir, os.path.join(data_dir, "cifar-10-batches-py")):
        if all(os.path.isfile(os.path.join(folder, name)) for name in _CIFAR10_BATCHES):
            batches = []
            for name in _CIFAR10_BATCHES:
                with open(os.path.join(folder, name), "rb") as f:
                    batches.append(_cifar10_batch(f))
            return batches
    if os.path.isfile(archive):
        with tarfile.open(archive, "r:gz") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            if all(name in members for name in _CIFAR10_BATCHES):
                return [_cifar10_batch(tar.extractfile(members[name])) for name in _CIFAR10_BATCHES]
    raise MissingPath(
        f"`data_dir` {data_dir} holds neither cifar-10-python.tar.gz nor the batches it unpacks to "
        f"({', '.join(_CIFAR10_BATCHES)}); download the archive as data/README.md says, or leave "
        "`data_dir` out to let Keras download it"
    )


def _cifar10_arrays(data_dir=None):
    if data_dir:
        batches = _cifar10_local(data_dir)
    else:
        try:
            (x_train, y_train), (x_test, y_test) = tf.keras.datasets.cifar10.load_data()
        except Exception as error:  # noqa: BLE001 -- Keras raises a bare Exception when offline
            raise DataError(
                "CIFAR-10 is downloaded by Keras on first use from www.cs.toronto.edu, and that "
                f"failed ({str(error).splitlines()[0][:200]}). On a machine without network, "
                "download cifar-10-python.tar.gz elsewhere and pass `data_dir=DIR` holding it: "
                "data/README.md says how"
            ) from None
        batches = [(x_train[i : i + 10000], y_train[i : i + 10000].ravel()) for i in range(0, 50000, 10000)]
        batches.append((x_test, y_test.ravel()))
    # Kept as uint8 (180 MB, not 720 MB); the pipeline converts each image to [0, 1].
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches]).astype(np.int32)
    train_size = sum(len(b[1]) for b in batches[:-1])
    return images, labels, CIFAR10_CLASSES, train_size


def splits(config):
    if config.name == "digits":
        images, labels = digits.load_arrays()
        classes = digits.CLASS_NAMES
        train, val, test = stratified_split(labels, (0.7, 0.1, 0.2), config.seed)
        augment = "none"
    else:
        images, labels, classes, n_train = _cifar10_arrays(config.data_dir)
        # The official test set stays the test set; 10% of the training set validates.
        train, val = stratified_split(labels[:n_train], (0.9, 0.1), config.seed)
        test = np.arange(n_train, len(labels))
        augment = "pad_crop"
    augment = augment if config.augment == "auto" else config.augment
    images = _resize_arrays(images, config.image_size)
    train_prepare, eval_prepare = pipeline.array_preparation(augment)

    def examples(indices):
        return tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))

    return Splits(
        train_stream=pipeline.TrainStream(
            examples(train), len(train), config.batch_size, config.seed, train_prepare
        ),
        val=pipeline.evaluation(examples(val), config.batch_size, eval_prepare),
        test=pipeline.evaluation(examples(test), config.batch_size, eval_prepare),
        num_classes=len(classes), image_shape=tuple(images.shape[1:]), class_names=tuple(classes),
        sizes={"train": len(train), "val": len(val), "test": len(test)},
    )
