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

Splits drawn from a seed are read back from ``<workdir>/split.json`` (or ``split_file``) when
one exists; otherwise ``Splits.drawn`` holds the drawn split and ``save_split`` writes it (a
training run does that once its directory is claimed), so a run can always be repeated on the
same images. A class too small to appear in every split is reported in ``Splits.notes``.
"""

import dataclasses
import json
import os
import pickle
import tarfile

import numpy as np
import tensorflow as tf

from atalp_tf.choices import BAD_IMAGE_POLICIES
from atalp_tf.errors import DataError
from atalp_tf.errors import MissingPath
from atalp_tf.datasets import digits
from atalp_tf.datasets import folders
from atalp_tf.datasets import pipeline
from atalp_tf.datasets.images import BadImagesError
from atalp_tf.datasets.images import find_unreadable
from atalp_tf.datasets.splits import stratified_split



@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to read and how.

    Args:
        name: a source listed in the module docstring.
        batch_size: global batch size.
        data_dir: where ``flowers17`` and ``folder`` data live; TFDS' data_dir for ``tfds:``.
        image_size: side of the square images the model sees; None keeps an array source's
            native size (file sources need it).
        seed: seed of the split and the shuffling.
        augment: ``auto`` (resized_crop for files, pad_crop for CIFAR-10, none for digits),
            ``none``, ``flip``, ``pad_crop`` or ``resized_crop``.
        bad_images: ``stop`` at unreadable files (listing them), or ``skip`` them.
        cache: ``""`` (none), ``"memory"`` or a file prefix for decoded images.
        split_file: a ``split.json`` of an earlier run to reuse.
        split_index: which of ``datasplits.mat``'s three 17 Flowers splits (1-3).
    """

    name: str
    batch_size: int
    data_dir: str | None = None
    image_size: int | None = None
    seed: int = 0
    augment: str = "auto"
    bad_images: str = "stop"
    cache: str = ""
    split_file: str | None = None
    split_index: int = 1


@dataclasses.dataclass(frozen=True)
class Splits:
    """Training stream, batched val/test datasets, and what the model needs to know."""

    train_stream: pipeline.TrainStream
    val: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    image_shape: tuple
    class_names: tuple
    sizes: dict
    skipped: tuple = ()  # (path, reason) of unreadable files left out
    split_path: str | None = None
    drawn: tuple | None = None  # (root, parts, class names) of a split drawn here, not yet saved
    notes: tuple = ()  # things a user should know, such as classes missing from a split

    @property
    def train(self):
        """The first epoch's training batches (``train_stream.from_step`` for training)."""
        return self.train_stream.epoch(0)


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
        f"--data_dir {data_dir} holds neither cifar-10-python.tar.gz nor the batches it unpacks to "
        f"({', '.join(_CIFAR10_BATCHES)}); download the archive as data/README.md says, or leave "
        "--data_dir out to let Keras download it"
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
                "download cifar-10-python.tar.gz elsewhere and pass --data_dir=DIR holding it: "
                "data/README.md says how"
            ) from None
        batches = [(x_train[i : i + 10000], y_train[i : i + 10000].ravel()) for i in range(0, 50000, 10000)]
        batches.append((x_test, y_test.ravel()))
    # Kept as uint8 (180 MB, not 720 MB); the pipeline converts each image to [0, 1].
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches]).astype(np.int32)
    train_size = sum(len(b[1]) for b in batches[:-1])
    return images, labels, CIFAR10_CLASSES, train_size


def _array_splits(config):
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


def _read_split(path, root):
    with open(path) as f:
        saved = json.load(f)
    parts = {}
    for part in ("train", "val", "test"):
        parts[part] = (
            [os.path.join(root, p) for p in saved[part]["paths"]],
            np.asarray(saved[part]["labels"], np.int32),
        )
    return parts, tuple(saved["class_names"])


def _write_split(path, root, parts, class_names):
    saved = {"data_dir": os.path.abspath(root), "class_names": list(class_names)}
    for part, (paths, labels) in parts.items():
        saved[part] = {
            "paths": [os.path.relpath(p, root) for p in paths],
            "labels": [int(label) for label in labels],
        }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(saved, f)


def _file_parts(config, workdir):
    """{part: (paths, labels)}, class names, the split file read (if any), and the split drawn
    here from the seed, to be saved (or None)."""
    root = config.data_dir
    if not root:
        raise DataError(f"dataset {config.name!r} reads files: give their directory (--data_dir)")
    if not os.path.isdir(root):
        raise MissingPath(f"--data_dir {root} does not exist")
    split_path = config.split_file or (workdir and os.path.join(workdir, "split.json"))
    if split_path and os.path.exists(split_path):
        parts, class_names = _read_split(split_path, root)
        return parts, class_names, split_path, None

    drawn = True
    if config.name == "flowers17":
        paths, labels, class_names = folders.flowers17_files(root)
        mat = os.path.join(root, "datasplits.mat")
        if os.path.exists(mat):
            indices, drawn = folders.flowers17_official_split(mat, config.split_index), False
        else:
            indices = stratified_split(labels, (0.5, 0.25, 0.25), config.seed)
    else:
        subtrees = {p: os.path.join(root, p) for p in ("train", "val", "test")}
        if os.path.isdir(subtrees["train"]) and (
            os.path.isdir(subtrees["val"]) or os.path.isdir(subtrees["test"])
        ):
            return (*_predefined_folder_parts(subtrees), None, None)
        paths, labels, class_names = folders.class_folder_tree(root)
        indices = stratified_split(labels, (0.7, 0.1, 0.2), config.seed)
    paths = np.asarray(paths)
    parts = {
        part: (list(paths[idx]), labels[idx]) for part, idx in zip(("train", "val", "test"), indices)
    }
    return parts, class_names, None, (root, parts, class_names) if drawn else None


def save_split(data, path):
    """Writes the split that ``data`` drew from its seed to ``path``; returns ``data`` with
    ``split_path`` set (unchanged if nothing was drawn)."""
    if data.drawn is None:
        return data
    _write_split(path, *data.drawn)
    return dataclasses.replace(data, split_path=path, drawn=None)


def _small_classes(parts, class_names):
    """Notes on classes absent from a split, with each class's counts per split."""
    notes = []
    for label, name in enumerate(class_names):
        counts = {part: int(np.sum(np.asarray(labels) == label)) for part, (_, labels) in parts.items()}
        if 0 in counts.values():
            shown = ", ".join(f"{n} {part}" for part, n in counts.items())
            notes.append(
                f"class {name!r} has {sum(counts.values())} images ({shown}): too few to appear in "
                "every split, so its accuracy is not measured in all of them; add images or drop the class"
            )
    return tuple(notes)


def _predefined_folder_parts(subtrees):
    train_paths, train_labels, classes = folders.class_folder_tree(subtrees["train"])
    parts = {"train": (train_paths, train_labels)}
    for part in ("val", "test"):
        if os.path.isdir(subtrees[part]):
            paths, labels, part_classes = folders.class_folder_tree(subtrees[part])
            if part_classes != classes:
                raise DataError(
                    f"{subtrees[part]} has classes {list(part_classes)} but {subtrees['train']} "
                    f"has {list(classes)}; both need the same class folders"
                )
            parts[part] = (paths, labels)
    # With only one of val/ and test/, it serves as both.
    parts.setdefault("val", parts.get("test"))
    parts.setdefault("test", parts["val"])
    return parts, classes


def _drop_unreadable(parts, policy):
    bad = find_unreadable([p for paths, _ in parts.values() for p in paths])
    if bad and policy == "stop":
        raise BadImagesError(bad, "Fix or remove them, or pass --bad_images=skip to leave them out.")
    dropped = {path for path, _ in bad}
    kept = {}
    for part, (paths, labels) in parts.items():
        keep = [i for i, p in enumerate(paths) if p not in dropped]
        kept[part] = ([paths[i] for i in keep], np.asarray(labels)[keep])
    return kept, tuple(bad)


def _file_splits(config, workdir):
    if not config.image_size:
        raise DataError(f"dataset {config.name!r} needs an image size (--image_size)")
    if config.bad_images not in BAD_IMAGE_POLICIES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGE_POLICIES}. Received: {config.bad_images!r}")
    parts, class_names, split_path, drawn = _file_parts(config, workdir)
    parts, skipped = _drop_unreadable(parts, config.bad_images)
    for part, (paths, _) in parts.items():
        if not paths:
            raise DataError(f"The {part} split of {config.data_dir} has no readable images")
    augment = "resized_crop" if config.augment == "auto" else config.augment
    train_prepare, eval_prepare = pipeline.file_preparation(augment, config.image_size)

    def examples(part):
        return pipeline.file_examples(*parts[part], config.image_size, config.cache)

    def evaluation(part):
        return pipeline.evaluation(examples(part), config.batch_size, eval_prepare)

    return Splits(
        train_stream=pipeline.TrainStream(
            examples("train"), len(parts["train"][0]), config.batch_size, config.seed, train_prepare
        ),
        val=evaluation("val"),
        test=evaluation("test"),
        num_classes=len(class_names), image_shape=(config.image_size, config.image_size, 3),
        class_names=class_names, sizes={part: len(parts[part][0]) for part in parts},
        skipped=skipped, split_path=split_path, drawn=drawn,
        notes=_small_classes(parts, class_names),
    )


def _tfds_splits(config):
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


def fixed_subset(dataset, count, size, seed, batch_size):
    """The same ``count`` examples of a batched ``dataset`` of ``size`` examples every time: a
    seeded shuffle of the whole (its first examples would be one class in a class-sorted split)."""
    examples = dataset.unbatch()
    shuffled = examples.shuffle(size, seed=seed, reshuffle_each_iteration=False)
    return shuffled.take(count).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load(config, workdir=None):
    """Batched splits of ``config``; a drawn split is saved in (and reused from) ``workdir``."""
    if config.name in ("digits", "cifar10"):
        data = _array_splits(config)
    elif config.name in ("flowers17", "folder"):
        data = _file_splits(config, workdir)
    elif config.name.startswith("tfds:"):
        data = _tfds_splits(config)
    else:
        raise ValueError(
            f"Unknown dataset {config.name!r}; expected digits, cifar10, flowers17, folder or "
            "tfds:NAME"
        )
    if data.sizes["train"] < config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {data.sizes['train']} training "
            f"images of {config.name!r}"
        )
    return data
