"""tf.data pipelines from arrays or image files: decode, cache, augment, batch, prefetch.

Every pipeline yields ``(pixels, label)`` with float32 pixels in [0, 1] and int32 labels, in
batches of the *global* batch size (Keras splits them across replicas).
"""

import tensorflow as tf

from atalp_tf.choices import AUGMENTATIONS

from atalp_tf.datasets.images import read_resized

# Eval images are resized so the centre crop keeps 87.5% of the shorter side (224 of 256).
CENTRE_CROP_FRACTION = 0.875


def load_size(image_size):
    return round(image_size / CENTRE_CROP_FRACTION)


def _flip(image):
    return tf.image.random_flip_left_right(image)


def _pad_crop(image, padding=4):
    # CIFAR-style: reflect-pad by 4 and crop back to the original size at a random offset.
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    return _flip(tf.image.random_crop(padded, shape))


def _resized_crop(image, size, area=(0.25, 1.0), aspect=(3 / 4, 4 / 3)):
    # Inception-style crop; the area range starts at 0.25 rather than ImageNet's 0.08 because
    # small fine-grained sets (flowers) lose the object in tiny crops.
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        min_object_covered=0.0,
        aspect_ratio_range=aspect,
        area_range=area,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return _flip(tf.image.resize(crop, (size, size), antialias=True))


def _centre_crop(image, size):
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def finish(dataset, batch_size, training, augment_fn=None):
    """Augments (training only), batches, shards by example and prefetches."""
    if training and augment_fn is not None:
        dataset = dataset.map(augment_fn, num_parallel_calls=tf.data.AUTOTUNE)
    # A short last training batch gives batch norm noisy statistics; evaluation keeps it.
    dataset = dataset.batch(batch_size, drop_remainder=training)
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


def array_augmentation(augment):
    """The (image, label) map of ``augment`` for images already at the model's size."""
    functions = {
        "none": None,
        "flip": lambda x, y: (_flip(x), y),
        "pad_crop": lambda x, y: (_pad_crop(x), y),
    }
    if augment not in functions:
        raise ValueError(
            f"augment={augment!r} does not apply to fixed-size images; use none, flip or pad_crop"
        )
    return functions[augment]


def from_arrays(images, labels, *, batch_size, training, augment, seed, cache_to=""):
    """Pipeline over in-memory float32 images already at the model's size."""
    augment_fn = array_augmentation(augment)
    dataset = cache(tf.data.Dataset.from_tensor_slices((images, labels)), cache_to)
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return finish(dataset, batch_size, training, augment_fn)


def from_files(paths, labels, *, batch_size, image_size, training, augment, seed, cache_to=""):
    """Pipeline over image files of any size and colour mode.

    Files are decoded (in parallel, by Pillow) with their shorter side resized to
    ``image_size / 0.875``; evaluation takes the centre ``image_size`` square, training the
    augmentation named by ``augment``. ``cache_to`` ("memory" or a file prefix) keeps the
    decoded, resized images, so only the first epoch decodes.
    """
    if augment not in AUGMENTATIONS[1:]:
        raise ValueError(f"Unknown augment={augment!r}; expected one of {AUGMENTATIONS[1:]}")
    side = load_size(image_size)

    def decode(path, label):
        image = tf.numpy_function(
            lambda p: read_resized(p.decode(), side), [path], tf.uint8, stateful=False
        )
        image.set_shape([None, None, 3])
        return tf.image.convert_image_dtype(image, tf.float32), label

    dataset = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    # Uncached, shuffle the file names (cheap); cached, shuffle the decoded images after.
    if training and not cache_to:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = cache(dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE), cache_to)
    if training and cache_to:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if not training or augment != "resized_crop":
        dataset = dataset.map(
            lambda x, y: (_centre_crop(x, image_size), y), num_parallel_calls=tf.data.AUTOTUNE
        )
        return finish(dataset, batch_size, training, array_augmentation(augment))
    return finish(dataset, batch_size, training, lambda x, y: (_resized_crop(x, image_size), y))
