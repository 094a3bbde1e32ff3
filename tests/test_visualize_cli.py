"""The visualize command on two tiny models: every command writes files that open."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from support import PATIENCE
from support import REPO

from atalp_tf.models import backbones
from atalp_tf.models.classifier import RobustClassifier


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "atalp_tf.visualize", *args],
        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE, env=env,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("visualize")
    models = []
    for name, seed in (("pat", 1), ("at_alp", 2)):
        path = root / f"{name}.keras"
        RobustClassifier(backbones.resnet18(3, (16, 16, 3), width=2), method="standard", seed=seed).save(path)
        models.append(str(path))
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(root / "images" / f"img{i}.jpg")
        mask = np.zeros((20, 24), np.uint8)
        mask[:, :12] = 255
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    return root, models


@pytest.mark.slow
def test_attention_writes_one_grid_per_image_and_the_maps(setup):
    root, models = setup
    out = root / "attention"
    result = _run("attention", f"--models={','.join(models)}", f"--image_dir={root / 'images'}",
                  "--labels=0,2", "--eps=8/255", "--steps=2", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    for i in range(2):
        with Image.open(out / f"attention_img{i}.png") as png:
            assert png.size[0] > 500 and png.size[1] > 4 * 100  # 5 columns, 4 rows
    maps = np.load(out / "attention.npz")
    assert maps["pat/adv/conv3"].shape == (2, 8, 8)
    assert sorted({key.split("/")[0] for key in maps.files} - {"labels"}) == ["at_alp", "pat"]

    again = _run("attention", f"--models={models[0]}", f"--image_dir={root / 'images'}",
                 f"--out_dir={out}", "--steps=1")
    assert again.returncode == 1 and "pass --overwrite" in again.stderr


@pytest.mark.slow
def test_parts_reports_a_share_per_stage_for_clean_and_adversarial(setup):
    root, models = setup
    out = root / "parts"
    result = _run("parts", f"--models={','.join(models)}", f"--image_dir={root / 'images'}",
                  f"--mask_dir={root / 'masks'}", "--steps=2", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "parts.json").read_text())
    assert report["images"] == 2 and report["mask_area"] == pytest.approx(0.5, abs=0.1)
    for per_stage in report["part_activation"].values():
        assert set(per_stage) == {"conv2", "conv3", "conv4", "conv5"}
        for values in per_stage.values():
            assert 0 <= values["clean"] <= 1 and 0 <= values["adv"] <= 1
    with open(out / "parts.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 4
    assert "clean" in result.stdout and "conv5" in result.stdout


@pytest.mark.slow
def test_parts_names_a_missing_mask(setup):
    root, models = setup
    (root / "empty_masks").mkdir(exist_ok=True)
    result = _run("parts", f"--models={models[0]}", f"--image_dir={root / 'images'}",
                  f"--mask_dir={root / 'empty_masks'}", f"--out_dir={root / 'nomask'}")
    assert result.returncode == 1 and "No mask for" in result.stderr and "img0" in result.stderr


@pytest.mark.slow
def test_landscape_writes_a_grid_per_model_and_a_surface(setup):
    root, models = setup
    out = root / "landscape"
    result = _run("landscape", f"--models={','.join(models)}", f"--images={root / 'images' / 'img0.jpg'}",
                  "--grid=5", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("pat", "at_alp"):
        with open(out / f"landscape_{name}_img0.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 25 and all(float(r["loss"]) >= 0 for r in rows)
    with Image.open(out / "landscape_img0.png") as png:
        assert png.size[0] > 500


@pytest.mark.slow
def test_bad_arguments_are_named(setup):
    root, models = setup
    assert "--models must list existing .keras files" in _run(
        "attention", "--models=/no/model.keras", f"--out_dir={root}").stderr
    assert "Give one command" in _run("pictures", f"--models={models[0]}", f"--out_dir={root}").stderr


@pytest.mark.slow
def test_without_matplotlib_the_csv_is_written_and_the_install_is_named(setup, tmp_path):
    root, models = setup
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(tmp_path / "blocker"))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "atalp_tf.visualize", "landscape", f"--models={models[0]}",
         f"--images={root / 'images' / 'img0.jpg'}", "--grid=3", f"--out_dir={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pip install 'atalp_tf[plots]'" in result.stderr
    assert os.listdir(out) == ["landscape_pat_img0.csv"]


@pytest.mark.slow
def test_a_run_directory_gives_its_class_names_and_labels_are_checked(setup, tmp_path):
    root, models = setup
    run = tmp_path / "run"
    run.mkdir()
    os.link(models[0], run / "model.keras")
    (run / "results.json").write_text(json.dumps({"class_names": ["cat", "dog", "bird"]}))
    out = tmp_path / "out"
    result = _run("attention", f"--models={run}", f"--image_dir={root / 'images'}", "--labels=cat,bird",
                  "--steps=1", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    maps = np.load(out / "attention.npz")
    assert maps["labels"].tolist() == ["cat", "bird"]
    assert set(maps["run/clean/predicted"].tolist()) <= {"cat", "dog", "bird"}
    wrong = _run("attention", f"--models={run}", f"--image_dir={root / 'images'}", "--labels=0,5",
                 "--steps=1", f"--out_dir={tmp_path / 'other'}")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "--labels has class id 5, but the models classify 3 classes (0 to 2)" in wrong.stderr


def test_the_attention_figure_has_a_title_and_a_colour_bar(monkeypatch, tmp_path):
    plots = pytest.importorskip("atalp_tf.plots")
    pytest.importorskip("matplotlib")
    saved = {}
    plt = plots.require_matplotlib()
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: saved.setdefault("figure", self))
    image = np.zeros((8, 8, 3), np.float32)
    maps = {s: np.ones((2, 2)) for s in ("conv2", "conv3")}
    plots.attention_grid(str(tmp_path / "a.png"), image, [("m clean\npred: cat", image, maps)], ["conv2", "conv3"],
                         title="img.jpg, true: cat; adversarial: PGD-20 at eps 8/255")
    figure = saved["figure"]
    assert figure._suptitle.get_text().startswith("img.jpg, true: cat")
    assert len(figure.axes) == 3 + 1  # the image, two stages and the colour bar


def test_a_plain_keras_classifier_gets_its_landscape_and_a_paragraph_for_attention(setup, tmp_path):
    # evaluate accepts any Keras classifier whose output is the logits; so does visualize.
    import keras

    from atalp_tf.errors import UserError
    from atalp_tf.inspection import pictures

    root, _ = setup
    inputs = keras.Input((16, 16, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    plain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(hidden)))
    plain.save(tmp_path / "plain.keras")
    session = pictures.Session.open(
        [str(tmp_path / "plain.keras")], pictures.image_paths(image_dir=str(root / "images")),
        steps=1, out_dir=str(tmp_path / "out"),
    )
    written = session.landscape(grid=3)
    assert "landscape_plain_img0.csv" in written
    with pytest.raises(UserError, match="has no stage outputs.* use the landscape command"):
        session.attention()
