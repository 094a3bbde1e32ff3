"""The suites run as they are: every method, attack and table step, on a tiny model and data."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from support import PATIENCE
from support import REPO

from atalp_tf.evaluation import plan
from atalp_tf.models.backbones import STAGES
from atalp_tf.reproduction import runner as reproduction
from atalp_tf.reproduction import suites


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four classes of ten 20x20 images: enough for APGD-T's four classes and a test split."""
    root = tmp_path_factory.mktemp("suite_data")
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir()
        for i in range(10):
            image = rng.integers(0, 255, (20, 20, 3), np.uint8)
            image[..., c % 3] = 180 + 20 * (c // 3)
            Image.fromarray(image).save(root / f"class{c}" / f"{i}.png")
    return str(root)


def _tiny(name, folder):
    return suites.scaled(suites.SUITES[name], data=dict(name="folder", data_dir=folder, batch_size=8))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["table1", "table2-flowers17"])
def test_a_gpu_suite_runs_every_method_and_writes_its_table(name, folder, tmp_path):
    # Every method trains through the same TrainConfig path (test_model checks each method's
    # step, and test_every_suite_builds_its_configs_and_attack_plans each suite's configs);
    # here at_alp and trades (its own attack and separate batch norm) beside the black-box
    # source, and table1's attacks on one model, keep the suites inside the test time budget.
    suite = _tiny(name, folder)
    suite = dataclasses.replace(suite, methods=("at_alp",) if name == "table1" else ("at_alp", "trades"))
    logged = []
    lines = reproduction.run_suite(suite, str(tmp_path), log=logged.append)
    with open(tmp_path / "table.csv") as f:
        rows = list(csv.DictReader(f))
    # The last and the best epoch's models, each evaluated.
    assert [(r["method"], r["checkpoint"]) for r in rows] == [
        (m, c) for c in ("last", "best") for m in suite.methods
    ]
    assert all(0.0 <= float(r["clean"]) <= 1.0 for r in rows)
    assert any(line.startswith("## Best epoch") for line in lines)
    header = next(line for line in lines if line.startswith("| method"))
    if suite.table == "robustness":
        # The dry run's AutoAttack has a reduced budget, and its column says so.
        assert "autoattack-reduced-4it-2t-20q" in header and "rays-20q" in header
        assert "training hours" in header
    else:
        assert "black-box eps=0.25" in header and "gray-box eps=0.5" in header
        assert os.path.isfile(tmp_path / "source" / "model.keras")
    assert (tmp_path / "settings.json").is_file() and (tmp_path / "timing.json").is_file()
    assert not os.path.exists(tmp_path / "at_alp" / "export")  # model.keras is all a table needs
    # One epoch each, so every best epoch is the last: the best rows repeat the last's figures
    # without a second evaluation.
    for method in suite.methods:
        assert json.loads((tmp_path / method / "results.json").read_text())["best_is_last"]
        assert not os.path.exists(tmp_path / method / "evaluation_best")
    assert _figures(rows, "best") == _figures(rows, "last")
    assert sum("the best epoch was the last" in m for m in logged) == len(suite.methods)
    # Started again, it redoes nothing; told that one run's best epoch was not its last, it
    # evaluates that run's best.keras, and the same weights give the figures it had reused.
    results_file = tmp_path / suite.methods[-1] / "results.json"
    results_file.write_text(json.dumps(dict(json.loads(results_file.read_text()), best_is_last=False)))
    logged.clear()
    reproduction.run_suite(suite, str(tmp_path), log=logged.append)
    assert sum("trained already" in m for m in logged) == len(suite.methods) + bool(suite.source)
    assert sum("evaluated already" in m for m in logged) == len(suite.methods)
    assert sum("the best epoch was the last" in m for m in logged) == len(suite.methods) - 1
    assert sum(" evaluating " in m for m in logged) == 1
    assert os.path.isfile(tmp_path / suite.methods[-1] / "evaluation_best" / "evaluation.json")
    assert not any("training in" in m for m in logged)
    with open(tmp_path / "table.csv") as f:
        assert _figures(list(csv.DictReader(f)), "best") == _figures(rows, "last")


def _figures(rows, checkpoint):
    return [{k: v for k, v in row.items() if k != "checkpoint"} for row in rows if row["checkpoint"] == checkpoint]


def test_every_suite_builds_its_configs_and_attack_plans(folder, tmp_path):
    # The other Table 2 suites differ from table2-flowers17 only in their data source (tested
    # in test_datasets and test_tfds_source): their training configs and plans must build.
    for name, suite in suites.SUITES.items():
        names = (["source"] if suite.source else []) + list(suite.methods)
        for model in names:
            config = reproduction.train_config(suite, model, str(tmp_path))
            assert config.objective.method == ("standard" if model == "source" else model)
        if suite.table == "parts":
            assert suite.train == suites.SUITES["table2-flowers17"].train, "table3 reads table2's models"
            continue
        e = suite.evaluation
        specs = plan.plan(e.eps, e.steps, e.attacks, step_size=e.step_size, queries=e.queries,
                                transfer=suite.source is not None, num_classes=17)
        assert specs, name
    table1 = suites.SUITES["table1"].evaluation
    names = [s.name for s in plan.plan(table1.eps, table1.steps, table1.attacks, queries=table1.queries,
                                             autoattack_budget=table1.autoattack_budget)]
    # Table 1's AA column is the standard AutoAttack, not a cut-down one.
    assert names == ["fgsm eps=8/255", "pgd-20 eps=8/255", "autoattack eps=8/255", "rays-5000q eps=8/255"]
    table2 = suites.SUITES["table2-flowers17"]
    assert table2.train["architecture"] == "resnet101" and table2.source["architecture"] == "resnet152"
    assert table2.evaluation.step_size == 1 / 256 and max(table2.evaluation.steps) == 200


@pytest.mark.slow
def test_table3_measures_part_attention_of_models_it_trained_or_was_given(tmp_path):
    rng = np.random.default_rng(1)
    data, masks = tmp_path / "data", tmp_path / "masks"
    masks.mkdir()
    for c in range(4):
        (data / f"class{c}").mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), np.uint8)).save(data / f"class{c}" / f"im{c}_{i}.png")
            if i < 2:  # masks for two images a class: the left half
                mask = np.zeros((20, 20), np.uint8)
                mask[:, :10] = 255
                Image.fromarray(mask).save(masks / f"im{c}_{i}.png")
    suite = dataclasses.replace(
        suites.scaled(suites.SUITES["table3"], data=dict(name="folder", data_dir=str(data), batch_size=8),
                      num_examples=6),
        methods=("at_alp",),
    )
    with pytest.raises(FileNotFoundError, match="`mask_dir`"):
        reproduction.run_suite(suite, str(tmp_path / "nothing"), mask_dir=str(tmp_path / "no_masks"))
    lines = reproduction.run_suite(suite, str(tmp_path / "trained"), mask_dir=str(masks))
    with open(tmp_path / "trained" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["at_alp"]
    assert all(0.0 <= float(r[f"{s} {k}"]) <= 1.0 for r in rows for s in STAGES for k in ("clean", "adv"))
    assert "6 images with masks" in "\n".join(lines) and "cover 50.0%" in "\n".join(lines)

    logged = []
    reproduction.run_suite(suite, str(tmp_path / "given"), mask_dir=str(masks),
                           models_from=str(tmp_path / "trained"), log=logged.append)
    assert sum("trained already" in m for m in logged) == 1 and not any("training in" in m for m in logged)
    assert (tmp_path / "given" / "table.csv").read_text() == (tmp_path / "trained" / "table.csv").read_text()


def test_a_suite_with_other_settings_is_refused_in_the_same_directory(folder, tmp_path):
    (tmp_path / "settings.json").write_text('{"name": "something else"}')
    with pytest.raises(Exception, match="settings.json"):
        reproduction.run_suite(_tiny("cpu-flowers", folder), str(tmp_path))


@pytest.mark.slow
def test_the_command_names_a_bad_suite():
    result = subprocess.run(
        [sys.executable, "-m", "atalp_tf.reproduce", "--suite=table9"],
        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE,
    )
    assert result.returncode != 0 and "--suite" in result.stderr and "cpu-flowers" in result.stderr


@pytest.mark.slow
def test_table3_without_masks_is_refused_before_any_work(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "atalp_tf.reproduce", "--suite=table3", f"--out_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE,
    )
    assert result.returncode != 0 and "--suite=table3 needs --mask_dir" in result.stderr
    assert not os.path.exists(tmp_path / "out")
