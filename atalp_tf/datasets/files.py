"""The file sources: the Oxford 17 Flowers in its official layout, and class-per-folder trees.

17 Flowers uses ``datasplits.mat`` when present, otherwise a seeded stratified 40/20/20 split;
a folder tree with ``train/`` and ``val/`` (or ``test/``) sub-trees uses those, otherwise a
seeded stratified 70/10/20 split. A split drawn from the seed is read back from ``split_file``
or the run's saved split when one exists; otherwise ``Splits.drawn`` holds
it and ``write_split`` saves it, so a run can always be repeated on the same images. Every file
is decoded once before training; unreadable ones stop the run or, asked to, are left out.
"""

import os

import numpy as np

from atalp_tf import atomic
from atalp_tf.choices import BAD_IMAGE_POLICIES
from atalp_tf.datasets import folders
from atalp_tf.datasets import pipeline
from atalp_tf.datasets.config import Splits
from atalp_tf.datasets.images import BadImagesError
from atalp_tf.datasets.images import find_unreadable
from atalp_tf.datasets.splits import stratified_split
from atalp_tf.errors import DataError
from atalp_tf.errors import MissingPath


def _read_split(path, root):
    saved = atomic.read_json(
        path, "the split of the data into train, val and test", "Delete it to draw the split again "
        "from the seed (a run that trained on it then no longer resumes), or give the intact file",
    )
    parts = {}
    for part in ("train", "val", "test"):
        parts[part] = (
            [os.path.join(root, p) for p in saved[part]["paths"]],
            np.asarray(saved[part]["labels"], np.int32),
        )
    return parts, tuple(saved["class_names"])


def write_split(path, root, parts, class_names):
    saved = {"data_dir": os.path.abspath(root), "class_names": list(class_names)}
    for part, (paths, labels) in parts.items():
        saved[part] = {
            "paths": [os.path.relpath(p, root) for p in paths],
            "labels": [int(label) for label in labels],
        }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic.write_json(path, saved)


def _file_parts(config, saved_split):
    """{part: (paths, labels)}, class names, the split file read (if any), and the split drawn
    here from the seed, to be saved (or None)."""
    root = config.data_dir
    if not root:
        raise DataError(f"dataset {config.name!r} reads files: give their directory (`data_dir`)")
    if not os.path.isdir(root):
        raise MissingPath(f"`data_dir` {root} does not exist")
    split_path = config.split_file or saved_split
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
        raise BadImagesError(bad, "Fix or remove them, or pass `bad_images=skip` to leave them out.")
    dropped = {path for path, _ in bad}
    kept = {}
    for part, (paths, labels) in parts.items():
        keep = [i for i, p in enumerate(paths) if p not in dropped]
        kept[part] = ([paths[i] for i in keep], np.asarray(labels)[keep])
    return kept, tuple(bad)


def splits(config, saved_split=None):
    if not config.image_size:
        raise DataError(f"dataset {config.name!r} needs an image size (`image_size`)")
    if config.bad_images not in BAD_IMAGE_POLICIES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGE_POLICIES}. Received: {config.bad_images!r}")
    parts, class_names, split_path, drawn = _file_parts(config, saved_split)
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
