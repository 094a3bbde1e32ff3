"""data/make_imagenet_subset.py on a small ImageNet-shaped tree the test writes."""

import os
import subprocess
import sys

from PIL import Image
import pytest
from support import PATIENCE
from support import REPO

from atalp_tf import datasets

# Runs the package in other processes.
pytestmark = pytest.mark.slow

SCRIPT = os.path.join(REPO, "data", "make_imagenet_subset.py")
SYNSETS = ["n01440764", "n01443537", "n01491361", "n02085620"]


def _jpeg(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (20, 16), (10, 120, 30)).save(path)


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=PATIENCE)


def test_builds_the_four_class_tree_from_flat_val_with_labels_csv(tmp_path):
    imagenet = tmp_path / "imagenet"
    rows = ["ImageId,PredictionString"]
    for s, synset in enumerate(SYNSETS + ["n09999999"]):  # one synset that is not wanted
        for i in range(3):
            _jpeg(str(imagenet / "train" / synset / f"{synset}_{i}.JPEG"))
            name = f"ILSVRC2012_val_{s * 3 + i:08d}"
            _jpeg(str(imagenet / "val" / f"{name}.JPEG"))
            rows.append(f"{name},{synset} 1 2 3 4")
    (imagenet / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "imagenet4"
    result = _run(f"--imagenet_dir={imagenet}", f"--output_dir={out}",
                  f"--val_labels={imagenet / 'LOC_val_solution.csv'}")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out / "train")) == SYNSETS == sorted(os.listdir(out / "val"))
    assert all(len(os.listdir(out / "val" / s)) == 3 for s in SYNSETS)
    assert "n01491361\tgreat white shark" in (out / "synsets.txt").read_text()

    data = datasets.load(
        datasets.DataConfig("folder", batch_size=4, data_dir=str(out), image_size=16),
        saved_split=str(tmp_path / "run" / "split.json"),
    )
    assert data.num_classes == 4 and data.sizes == {"train": 12, "val": 12, "test": 12}

    again = _run(f"--imagenet_dir={imagenet}", f"--output_dir={out}",
                 f"--val_labels={imagenet / 'LOC_val_solution.csv'}")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_names_a_missing_synset(tmp_path):
    _jpeg(str(tmp_path / "imagenet" / "train" / SYNSETS[0] / "a.JPEG"))
    result = _run(f"--imagenet_dir={tmp_path / 'imagenet'}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode != 0
    assert "has no folder for synset(s)" in result.stderr and SYNSETS[1] in result.stderr
