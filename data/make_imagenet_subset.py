r"""Builds the paper's 4-class part of ImageNet as a class-per-folder tree.

    python data/make_imagenet_subset.py --imagenet_dir=/data/imagenet --output_dir=/data/imagenet4

``--imagenet_dir`` is an ILSVRC-2012 copy with ``train/<synset>/*.JPEG`` and a validation set
either as ``val/<synset>/*.JPEG`` or as flat ``val/*.JPEG`` with Kaggle's
``LOC_val_solution.csv`` beside it (pass ``--val_labels``). The output is
``<output_dir>/train/<synset>/`` and ``<output_dir>/val/<synset>/`` (symbolic links unless
``--copy``) and ``<output_dir>/synsets.txt``; train on it with
``--dataset=folder --data_dir=<output_dir>``, which uses ImageNet's val as validation and test.

The paper names tench, goldfish, great white shark and "a dog class"; it does not say which
dog, so the default takes the first dog synset in ImageNet's order, n02085620 (Chihuahua).
Pass ``--synsets`` to choose others. An existing ``--output_dir`` is not modified.
"""

import csv
import os
import shutil

from absl import app
from absl import flags

SYNSETS = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01491361": "great white shark",
    "n02085620": "Chihuahua",
}

_IMAGENET_DIR = flags.DEFINE_string("imagenet_dir", None, "ILSVRC-2012 root.", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to build the subset.", required=True)
_SYNSETS = flags.DEFINE_list("synsets", list(SYNSETS), "WordNet ids of the classes.")
_VAL_LABELS = flags.DEFINE_string(
    "val_labels", None, "LOC_val_solution.csv, when val/ is one flat folder."
)
_COPY = flags.DEFINE_bool("copy", False, "Copy the images instead of linking them.")


def _val_files(val_dir, synsets, labels_csv):
    if all(os.path.isdir(os.path.join(val_dir, s)) for s in synsets):
        return {s: [os.path.join(val_dir, s, f) for f in sorted(os.listdir(os.path.join(val_dir, s)))]
                for s in synsets}
    if not labels_csv:
        raise app.UsageError(
            f"{val_dir} has no per-synset folders; pass --val_labels=LOC_val_solution.csv"
        )
    files = {s: [] for s in synsets}
    with open(labels_csv) as f:
        for row in csv.DictReader(f):
            synset = row["PredictionString"].split()[0]
            if synset in files:
                files[synset].append(os.path.join(val_dir, row["ImageId"] + ".JPEG"))
    return files


def _place(sources, folder, copy):
    os.makedirs(folder)
    for source in sources:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{source} is listed but does not exist")
        target = os.path.join(folder, os.path.basename(source))
        if copy:
            shutil.copy2(source, target)
        else:
            os.symlink(os.path.abspath(source), target)


def main(argv):
    del argv
    root, out = _IMAGENET_DIR.value, _OUTPUT_DIR.value
    if os.path.exists(out):
        raise app.UsageError(f"--output_dir {out} already exists; choose a new directory")
    synsets = _SYNSETS.value
    train_dir = os.path.join(root, "train")
    missing = [s for s in synsets if not os.path.isdir(os.path.join(train_dir, s))]
    if missing:
        raise app.UsageError(f"{train_dir} has no folder for synset(s) {missing}")
    val = _val_files(os.path.join(root, "val"), synsets, _VAL_LABELS.value)
    for synset in synsets:
        folder = os.path.join(train_dir, synset)
        _place([os.path.join(folder, f) for f in sorted(os.listdir(folder))],
               os.path.join(out, "train", synset), _COPY.value)
        _place(val[synset], os.path.join(out, "val", synset), _COPY.value)
    with open(os.path.join(out, "synsets.txt"), "w") as f:
        for synset in synsets:
            f.write(f"{synset}\t{SYNSETS.get(synset, '')}\n")
    counts = {s: len(os.listdir(os.path.join(out, "train", s))) for s in synsets}
    print(f"Wrote {out}: train images per synset {counts}")


if __name__ == "__main__":
    app.run(main)
