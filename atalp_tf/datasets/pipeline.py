"""tf.data pipelines: decode, cache, shuffle, augment, batch, prefetch.

Every pipeline yields ``(pixels, label)`` with float32 pixels in [0, 1] and int32 labels, in
batches of the *global* batch size (Keras splits them across replicas).

Training data is a ``TrainStream``: epoch ``e`` visits the examples in an order fixed by
``(seed, e)``, and each example's augmentation draws from a stateless seed ``(seed, e, i)``
for its position ``i`` in that order. So the stream can restart at any global step and a
resumed run sees the same augmented batches as an uninterrupted one.
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from atalp_tf.choices import AUGMENTATIONS
from atalp_tf.datasets.images import read_resized

# Eval images are resized so the centre crop keeps 87.5% of the shorter side (224 of 256).
CENTRE_CROP_FRACTION = 0.875
_EPOCH_SEED_STRIDE = 1_000_003


def load_size(image_size):
    return round(image_size / CENTRE_CROP_FRACTION)


def _to_float(image):
    return tf.image.convert_image_dtype(image, tf.float32)


def _split(seed):
    first, second = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    return first, second


def _flip(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed)


def _pad_crop(image, seed, padding=4):
    # CIFAR-style: reflect-pad by 4 and crop back to the original size at a random offset.
    crop_seed, flip_seed = _split(seed)
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    return _flip(tf.image.stateless_random_crop(padded, shape, crop_seed), flip_seed)


def _resized_crop(image, size, seed, area=(0.25, 1.0), aspect=(3 / 4, 4 / 3)):
    # Inception-style crop; the area range starts at 0.25 rather than ImageNet's 0.08 because
    # small fine-grained sets (flowers) lose the object in tiny crops.
    box_seed, flip_seed = _split(seed)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=box_seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect,
        area_range=area,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return _flip(tf.image.resize(crop, (size, size), antialias=True), flip_seed)


def _centre_crop(image, size):
    shape = tf.shape(image)
    return tf.image.crop_to_bounding_box(image, (shape[0] - size) // 2, (shape[1] - size) // 2, size, size)


def evaluation_square(image, image_size, crop_fraction=CENTRE_CROP_FRACTION):
    """A uint8 ``[H, W, C]`` image of any size as evaluation sees it, float ``[S, S, C]`` in
    [0, 1]: the shorter side resized to ``image_size / crop_fraction`` and the centre square
    kept, as for image files (Pillow resizes those; TensorFlow's antialiased bilinear here
    differs from it by a few levels of 255); with ``crop_fraction=None`` the whole image
    resized to ``S x S``, as for the array sets."""
    image = _to_float(image)
    if crop_fraction is None:
        return tf.clip_by_value(tf.image.resize(image, (image_size, image_size), antialias=True), 0.0, 1.0)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = round(image_size / crop_fraction) / tf.reduce_min(shape)
    size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), image_size)
    resized = tf.clip_by_value(tf.image.resize(image, size, antialias=True), 0.0, 1.0)
    return _centre_crop(resized, image_size)


def _finalize(dataset):
    options = tf.data.Options()
    # Examples, not files, are divided among workers: the file list is one tensor, so
    # file-level sharding would leave all but one worker without data.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def cache(dataset, where):
    """``where``: "" (no cache), "memory", or a file prefix."""
    if not where:
        return dataset
    return dataset.cache("" if where == "memory" else where)


def _map(fn):
    return lambda image, label: (fn(image), label)


@dataclasses.dataclass(frozen=True)
class TrainStream:
    """Training batches whose order and augmentation are functions of ``(seed, epoch)``.

    ``examples`` holds the decoded (and possibly cached) examples in a fixed order; ``prepare``
    turns one stored image and a stateless seed (a shape-[2] int64 tensor) into the model's
    float input, with random augmentation drawn from that seed.
    """

    examples: tf.data.Dataset
    size: int
    batch_size: int
    seed: int
    prepare: Callable

    @property
    def steps_per_epoch(self):
        return self.size // self.batch_size

    def _epoch(self, epoch):
        seed = epoch * _EPOCH_SEED_STRIDE + self.seed
        shuffled = self.examples.shuffle(self.size, seed=seed, reshuffle_each_iteration=False)
        # Seeding by position, not by a stateful generator, is what lets a resumed stream
        # (``from_step``'s skip) draw the same crops and flips as an uninterrupted one.
        epoch_seed = tf.constant(seed, tf.int64)

        def prepare(position, example):
            image, label = example
            return self.prepare(image, tf.stack([epoch_seed, position])), label

        prepared = shuffled.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        # A short last batch would give batch norm noisy statistics: drop it.
        return prepared.batch(self.batch_size, drop_remainder=True)

    def epoch(self, epoch=0):
        """One epoch's batches, for inspection and benchmarks."""
        return _finalize(self._epoch(epoch))

    def from_step(self, step, epochs):
        """The batches from global step ``step`` to the end of epoch ``epochs - 1``."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        dataset = self._epoch(epoch).skip(offset)
        for later in range(epoch + 1, epochs):
            dataset = dataset.concatenate(self._epoch(later))
        return _finalize(dataset)


def evaluation(examples, batch_size, prepare):
    """Batches in storage order, the last one possibly short."""
    return _finalize(examples.map(_map(prepare), num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size))


def array_preparation(augment):
    """(train, eval) preparations of images already at the model's size."""
    augmentations = {"none": lambda image, seed: image, "flip": _flip, "pad_crop": _pad_crop}
    if augment not in augmentations:
        raise ValueError(
            f"augment={augment!r} does not apply to fixed-size images; use none, flip or pad_crop"
        )
    augmentation = augmentations[augment]
    return (lambda image, seed: augmentation(_to_float(image), seed)), _to_float


def file_examples(paths, labels, image_size, cache_to=""):
    """Decoded uint8 images, shorter side ``image_size / 0.875``, in the order of ``paths``.

    Pillow decodes in parallel threads (it releases the GIL); ``cache_to`` ("memory" or a file
    prefix) keeps the decoded images so only the first pass decodes.
    """
    side = load_size(image_size)

    def decode(path, label):
        image = tf.numpy_function(
            lambda p: read_resized(p.decode(), side), [path], tf.uint8, stateful=False
        )
        image.set_shape([None, None, 3])
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    return cache(dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE), cache_to)


def file_preparation(augment, image_size):
    """(train, eval) preparations of decoded files: evaluation takes the centre square."""
    if augment not in AUGMENTATIONS[1:]:
        raise ValueError(f"Unknown augment={augment!r}; expected one of {AUGMENTATIONS[1:]}")

    def centre(image):
        return _centre_crop(_to_float(image), image_size)

    if augment == "resized_crop":
        return (lambda image, seed: _resized_crop(_to_float(image), image_size, seed)), centre
    train, _ = array_preparation(augment)
    return (lambda image, seed: train(centre(image), seed)), centre
