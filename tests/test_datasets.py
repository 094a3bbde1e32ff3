"""Datasets: 17 Flowers labels and splits, class folders with bad and unusual files."""

import dataclasses
import json
import os

import numpy as np
from PIL import Image
import pytest
from support import FLOWERS17
import tensorflow as tf

from atalp_tf import datasets
from atalp_tf.datasets import folders
from atalp_tf.datasets import pipeline
from atalp_tf.datasets.images import BadImagesError
from atalp_tf.datasets.splits import stratified_split

needs_flowers = pytest.mark.skipif(
    not os.path.isdir(os.path.join(FLOWERS17, "jpg")),
    reason=f"the 17 Flowers test copy is not at {FLOWERS17}",
)


def _flowers(tmp_path, seed=0, root=FLOWERS17, **kwargs):
    config = datasets.DataConfig(
        "flowers17", batch_size=32, data_dir=str(root), image_size=32, seed=seed, **kwargs
    )
    # As a training run does: read a split saved before, or save the one drawn now.
    data = datasets.load(config, saved_split=str(tmp_path / "split.json"))
    return datasets.save_split(data, str(tmp_path / "split.json"))


def _split_lists(tmp_path):
    with open(tmp_path / "split.json") as f:
        saved = json.load(f)
    return {part: saved[part]["paths"] for part in ("train", "val", "test")}, saved


def test_stratified_split_is_disjoint_complete_proportional_and_seeded():
    labels = np.repeat(np.arange(4), 20)
    parts = stratified_split(labels, (0.5, 0.25, 0.25), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(80))
    for part, share in zip(parts, (10, 5, 5)):
        assert np.all(np.bincount(labels[part], minlength=4) == share)
    again = stratified_split(labels, (0.5, 0.25, 0.25), seed=3)
    other = stratified_split(labels, (0.5, 0.25, 0.25), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(parts[0], other[0])
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(labels, (0.5, 0.6), seed=0)


@needs_flowers
def test_flowers17_labels_follow_the_official_numbering():
    paths, labels, classes = folders.flowers17_files(FLOWERS17)
    assert len(paths) == 1360 and len(classes) == 17
    assert os.path.basename(paths[79]) == "image_0080.jpg" and labels[79] == 0
    assert os.path.basename(paths[80]) == "image_0081.jpg" and labels[80] == 1
    assert labels[-1] == 16 and np.all(np.bincount(labels) == 80)


@needs_flowers
def test_flowers17_seeded_split_sizes_disjointness_and_repeatability(tmp_path):
    data = _flowers(tmp_path / "a", seed=0)
    assert data.sizes == {"train": 680, "val": 340, "test": 340}
    assert data.num_classes == 17 and data.image_shape == (32, 32, 3)
    lists, saved = _split_lists(tmp_path / "a")
    sets = {part: set(paths) for part, paths in lists.items()}
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert len(sets["train"] | sets["val"] | sets["test"]) == 1360
    for part, share in (("train", 40), ("val", 20), ("test", 20)):
        assert np.all(np.bincount(saved[part]["labels"], minlength=17) == share)
        for path, label in zip(saved[part]["paths"], saved[part]["labels"]):
            assert (int(path[-8:-4]) - 1) // 80 == label

    _flowers(tmp_path / "b", seed=0)
    assert _split_lists(tmp_path / "b")[0] == lists
    _flowers(tmp_path / "c", seed=1)
    assert _split_lists(tmp_path / "c")[0]["test"] != lists["test"]
    # A run directory that already holds a split keeps it, whatever the seed says now.
    _flowers(tmp_path / "a", seed=5)
    assert _split_lists(tmp_path / "a")[0] == lists


@needs_flowers
def test_flowers17_batches_hold_pixels_in_range_with_the_right_labels(tmp_path):
    data = _flowers(tmp_path, augment="resized_crop")
    images, labels = next(iter(data.train))
    assert images.shape == (32, 32, 32, 3) and images.dtype == "float32"
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
    assert set(labels.numpy()) <= set(range(17))
    test_images, test_labels = next(iter(data.test))
    assert test_images.shape[1:] == (32, 32, 3)


@needs_flowers
def test_flowers17_uses_datasplits_mat_when_present(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "flowers"
    root.mkdir()
    os.symlink(os.path.join(FLOWERS17, "jpg"), root / "jpg")
    numbers = np.arange(1, 1361)
    per_class = numbers.reshape(17, 80)
    mat = {"trn1": per_class[:, :40].ravel(), "val1": per_class[:, 40:60].ravel(),
           "tst1": per_class[:, 60:].ravel()}
    savemat(root / "datasplits.mat", mat)
    data = _flowers(tmp_path / "run", root=root)
    assert data.sizes == {"train": 680, "val": 340, "test": 340}
    assert data.split_path is None  # the official split is not copied into the run


def _write(path, mode="RGB", size=(40, 30), fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    color = {"RGB": (200, 10, 10), "L": 128, "CMYK": (0, 255, 255, 0), "RGBA": (0, 0, 255, 0),
             "I;16": 40000, "P": 3}[mode]
    Image.new(mode, size, color).save(path, format=fmt)


@pytest.fixture
def odd_folder(tmp_path):
    root = tmp_path / "pets"
    for i in range(6):
        _write(str(root / "cat" / f"{i}.jpg"))
        _write(str(root / "dog" / f"{i}.png"), mode="L")  # grayscale
    _write(str(root / "cat" / "cmyk.jpg"), mode="CMYK")
    _write(str(root / "cat" / "alpha.png"), mode="RGBA")
    _write(str(root / "dog" / "deep.png"), mode="I;16")
    _write(str(root / "dog" / "palette.gif"), mode="P")
    (root / "cat" / "Thumbs.db").write_bytes(b"\0" * 10)  # ignored, as Windows writes it
    return root


def _folder(root, tmp_path, **kwargs):
    config = datasets.DataConfig("folder", batch_size=4, data_dir=str(root), image_size=16, **kwargs)
    return datasets.load(config)


def test_folder_reads_grayscale_cmyk_alpha_16bit_and_palette_images(odd_folder, tmp_path):
    data = _folder(odd_folder, tmp_path)
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert sum(data.sizes.values()) == 16
    images = np.concatenate([x.numpy() for x, _ in data.test] + [x.numpy() for x, _ in data.val])
    assert images.shape[1:] == (16, 16, 3)
    from atalp_tf.datasets.images import read_rgb

    cmyk = read_rgb(str(odd_folder / "cat" / "cmyk.jpg"))
    assert cmyk.shape == (30, 40, 3) and cmyk[0, 0, 0] > 200 and cmyk[0, 0, 1] < 60  # red
    alpha = read_rgb(str(odd_folder / "cat" / "alpha.png"))
    assert alpha[0, 0].tolist() == [255, 255, 255]  # fully transparent -> white background
    deep = read_rgb(str(odd_folder / "dog" / "deep.png"))
    assert abs(int(deep[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


@pytest.mark.parametrize("augment", ["pad_crop", "resized_crop"])
def test_a_resumed_stream_draws_the_same_augmentation_as_an_uninterrupted_one(tmp_path, augment):
    rng = np.random.default_rng(0)
    root = tmp_path / "noise"
    for name in ("a", "b"):
        for i in range(12):
            path = root / name / f"{i}.png"
            os.makedirs(path.parent, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (24, 20, 3), np.uint8)).save(path)
    stream = _folder(root, tmp_path, augment=augment).train_stream

    def images(step, prepare=stream.prepare):
        replaced = dataclasses.replace(stream, prepare=prepare)
        return [x.numpy() for x, _ in replaced.from_step(step, epochs=2)]

    whole = images(0)
    resume_at = stream.steps_per_epoch + 1  # in the middle of the second epoch
    resumed = images(resume_at)
    assert len(resumed) == len(whole) - resume_at > 0
    for uninterrupted, again in zip(whole[resume_at:], resumed):
        np.testing.assert_array_equal(uninterrupted, again)
    # The draws are real: the same examples in the same order, unaugmented, look different.
    unaugmented = images(0, prepare=pipeline.file_preparation("none", 16)[0])
    assert not np.allclose(whole[0], unaugmented[0])

def test_corrupt_and_non_image_files_are_reported_by_path(odd_folder, tmp_path):
    corrupt = odd_folder / "cat" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    stray = odd_folder / "dog" / "notes.txt"
    stray.write_text("labels?")
    empty = odd_folder / "dog" / "666.jpg"
    empty.write_bytes(b"")
    with pytest.raises(BadImagesError) as error:
        _folder(odd_folder, tmp_path)
    message = str(error.value)
    for path in (corrupt, stray, empty):
        assert str(path) in message
    assert "3 file(s)" in message and "`bad_images=skip`" in message

    data = _folder(odd_folder, tmp_path, bad_images="skip")
    assert sorted(p for p, _ in data.skipped) == sorted(map(str, (corrupt, empty, stray)))
    assert sum(data.sizes.values()) == 16
    for _ in data.train:
        pass


def test_truncated_jpeg_is_found(odd_folder, tmp_path):
    good = odd_folder / "cat" / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(good)
    (odd_folder / "cat" / "cut.jpg").write_bytes(good.read_bytes()[:3000])
    with pytest.raises(BadImagesError, match="cut.jpg"):
        _folder(odd_folder, tmp_path)


def test_empty_class_folder_and_missing_directory_are_named(odd_folder, tmp_path):
    (odd_folder / "hamster").mkdir()
    with pytest.raises(ValueError, match=r"no files: .*hamster"):
        _folder(odd_folder, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _folder(tmp_path / "nowhere", tmp_path)


def test_train_and_val_subfolders_are_used_as_the_split(tmp_path):
    root = tmp_path / "tree"
    for part, count in (("train", 5), ("val", 2)):
        for name in ("a", "b", "c"):
            for i in range(count):
                _write(str(root / part / name / f"{i}.jpg"))
    data = _folder(root, tmp_path)
    assert data.sizes == {"train": 15, "val": 6, "test": 6}
    assert data.split_path is None
    _write(str(root / "val" / "d" / "0.jpg"))
    with pytest.raises(ValueError, match="need the same class folders"):
        _folder(root, tmp_path)


def test_class_count_that_does_not_match_the_model_is_refused(tmp_path):
    from atalp_tf.training import trainer
    from atalp_tf.training.config import TrainConfig

    config = TrainConfig.from_flat(
        model_dir=str(tmp_path / "run"),
        data=datasets.DataConfig("digits", batch_size=32),
        num_classes=5,
        method="standard",
        epochs=1,
    )
    with pytest.raises(ValueError, match="set up for 5 classes .* has 10: 0, 1, 2"):
        trainer.run(config)


def _cifar_batches(root, per_batch=12):
    """Six CIFAR-10 batches in the official pickle format, small."""
    import pickle

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (per_batch, 3072), np.uint8),
                 b"labels": [i % 10 for i in range(per_batch)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)


@pytest.mark.parametrize("packed", [False, True])
def test_cifar10_reads_a_local_copy_unpacked_or_as_the_archive(tmp_path, packed):
    import tarfile

    _cifar_batches(tmp_path / "cifar-10-batches-py")
    root = tmp_path
    if packed:
        root = tmp_path / "download"
        root.mkdir()
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = datasets.load(datasets.DataConfig("cifar10", batch_size=8, data_dir=str(root)))
    assert data.sizes == {"train": 50, "val": 10, "test": 12} and data.image_shape == (32, 32, 3)
    assert data.class_names[0] == "airplane"
    images, labels = next(iter(data.test))
    assert images.shape == (8, 32, 32, 3) and labels.numpy().tolist() == list(range(8))


def test_cifar10_offline_says_where_to_get_it(monkeypatch):
    from atalp_tf.errors import DataError

    def offline():
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz: None")

    monkeypatch.setattr(tf.keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="pass `data_dir=DIR` holding it: data/README.md says how"):
        datasets.load(datasets.DataConfig("cifar10", batch_size=8))


def test_a_class_too_small_for_every_split_is_noted_with_its_counts(tmp_path):
    from PIL import Image

    for name, count in (("big", 10), ("tiny", 2)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / name / f"{i}.png")
    data = datasets.load(datasets.DataConfig("folder", batch_size=2, data_dir=str(tmp_path), image_size=8))
    assert len(data.notes) == 1
    assert data.notes[0].startswith("class 'tiny' has 2 images (") and "0 " in data.notes[0]
