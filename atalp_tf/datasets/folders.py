"""File lists of the on-disk layouts: a class-per-folder tree and the Oxford 17 Flowers."""

import os
import re

import numpy as np

from atalp_tf.errors import DataError
from atalp_tf.errors import MissingPath

FLOWERS17_CLASSES = (
    "daffodil", "snowdrop", "lily_valley", "bluebell", "crocus", "iris", "tigerlily", "tulip",
    "fritillary", "sunflower", "daisy", "colts_foot", "dandelion", "cowslip", "buttercup",
    "windflower", "pansy",
)
FLOWERS17_PER_CLASS = 80


def _visible(names):
    return sorted(n for n in names if not n.startswith(".") and n not in ("Thumbs.db", "desktop.ini"))


def class_folder_tree(root):
    """Paths, labels and class names of ``root/<class>/<file>``; classes in sorted order.

    Every visible file in a class folder is listed, images or not, so that the caller's check
    reports a stray file by its path instead of skipping it silently.
    """
    if not os.path.isdir(root):
        raise MissingPath(f"Dataset directory {root} does not exist")
    classes = [c for c in _visible(os.listdir(root)) if os.path.isdir(os.path.join(root, c))]
    if len(classes) < 2:
        raise DataError(
            f"{root} should hold one sub-directory per class (at least 2); found "
            f"{len(classes)}: {classes}"
        )
    paths, labels = [], []
    empty = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = [f for f in _visible(os.listdir(folder)) if os.path.isfile(os.path.join(folder, f))]
        if not files:
            empty.append(folder)
        paths += [os.path.join(folder, f) for f in files]
        labels += [label] * len(files)
    if empty:
        raise DataError(
            f"Class folder(s) with no files: {', '.join(empty)}. Every class needs images; "
            "remove the empty folders or add images to them"
        )
    return paths, np.asarray(labels, np.int32), tuple(classes)


def flowers17_files(root):
    """Paths and labels of the 17 Flowers in its official layout, ``jpg/image_0001.jpg``...

    Image i (1-based) belongs to class (i - 1) // 80. ``root`` may be the folder holding
    ``jpg/`` or ``jpg/`` itself.
    """
    folder = os.path.join(root, "jpg") if os.path.isdir(os.path.join(root, "jpg")) else root
    if not os.path.isdir(folder):
        raise MissingPath(f"17 Flowers directory {root} does not exist")
    pattern = re.compile(r"^image_(\d{4})\.jpg$")
    numbered = sorted(
        (int(m.group(1)), name) for name in os.listdir(folder) if (m := pattern.match(name))
    )
    expected = len(FLOWERS17_CLASSES) * FLOWERS17_PER_CLASS
    numbers = [n for n, _ in numbered]
    if numbers != list(range(1, expected + 1)):
        missing = sorted(set(range(1, expected + 1)) - set(numbers))
        raise DataError(
            f"{folder} should hold image_0001.jpg .. image_{expected:04d}.jpg (the official "
            f"17 Flowers layout); found {len(numbers)} such files"
            + (f", missing e.g. image_{missing[0]:04d}.jpg" if missing else "")
        )
    paths = [os.path.join(folder, name) for _, name in numbered]
    labels = (np.asarray(numbers) - 1) // FLOWERS17_PER_CLASS
    return paths, labels.astype(np.int32), FLOWERS17_CLASSES


def flowers17_official_split(mat_path, index):
    """Train/val/test index arrays (0-based) of split ``index`` (1-3) of ``datasplits.mat``."""
    from scipy.io import loadmat

    if index not in (1, 2, 3):
        raise ValueError(f"datasplits.mat has splits 1, 2 and 3. Received: split_index={index}")
    mat = loadmat(mat_path)
    return [np.sort(mat[f"{part}{index}"].ravel().astype(int) - 1) for part in ("trn", "val", "tst")]
