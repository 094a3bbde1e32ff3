"""Time to robustness: how many minutes each training recipe takes to reach its robust accuracy.

    python benchmarks/time_to_robustness.py --data_dir=/data/17flowers --seeds=0,1 \
        --output=runs/benchmarks/time_to_robustness.json

What a user pays for is the hours until a model is as robust as it will get. Every recipe
trains AT + ALP (alpha 0.5, beta 1) on 17 Flowers at 32x32, a width-16 ResNet-18 at eps 8/255,
from the same seed, in this one process, one after another. For each it records the wall time
(data pipeline, compilation and validation included, up to the end of the last epoch) against
the validation robust accuracy
at every validated epoch, then the final model's test accuracy under ``atalp_tf.evaluate``'s
worst case over PGD-20, APGD-CE, APGD-T and Square (not PGD-20 alone).

Recipes (``RECIPES``): ``reference`` is ``flags/flowers17_fast_cpu.cfg`` with ``--attack=pgd``
(PGD-7 with step 2/255, cosine learning rate, 20 epochs, validation by PGD-20 on the whole
validation split after every epoch); the fast ones make their examples with FGSM from a
random start (step 1.25 eps), follow a one-cycle learning rate over 6, 10 or 14 epochs and
validate less often, on a fixed 170-image subset with PGD-10.

It writes a JSON file (``--output``) and, with matplotlib, a plot of validation robust accuracy
against wall-clock minutes (``--plot``, one curve per recipe and seed), and prints a table: per
recipe, the mean over seeds of the wall time, its share spent validating, clean and worst-case
test accuracy with their standard error, and the time against the reference's. The target: a
fast recipe reaches the reference's final worst-case accuracy, within one standard error, in at
most 25% of its wall time, on every seed.
"""

import json
import math
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

EPS = 8 / 255
# TrainConfig settings of every recipe (flags/flowers17_cpu.cfg and flowers17_fast_cpu.cfg).
COMMON = dict(
    architecture="resnet18", width=16, method="at_alp", alpha=0.5, beta=1.0, optimizer="sgd",
    momentum=0.9, weight_decay=5e-4, verbose=2, export=False, overwrite=True,
)
FAST_VALIDATION = dict(val_steps=10, val_examples=170)
RECIPES = {
    "reference": dict(attack="pgd", steps=7, step=2 / 255, epochs=20, schedule="cosine", learning_rate=0.05,
                      validate_every=1, val_steps=None, val_examples=None),
    "fgsm_rs_onecycle_10": dict(attack="fgsm_rs", steps=1, step=1.25 * EPS, epochs=10, schedule="onecycle",
                                learning_rate=0.1, validate_every=2, **FAST_VALIDATION),
    # flags/flowers17_onecycle_cpu.cfg: the recipe that met the target.
    "fgsm_rs_onecycle_14": dict(attack="fgsm_rs", steps=1, step=1.25 * EPS, epochs=14, schedule="onecycle",
                                learning_rate=0.1, validate_every=7, **FAST_VALIDATION),
    "fgsm_rs_onecycle_6": dict(attack="fgsm_rs", steps=1, step=1.25 * EPS, epochs=6, schedule="onecycle",
                               learning_rate=0.1, validate_every=2, **FAST_VALIDATION),
}
TARGET_SHARE = 0.25

_DATA_DIR = flags.DEFINE_string("data_dir", None, "17 Flowers in its official layout.", required=True)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds; each draws its own split, weights and attacks.")
_RECIPES = flags.DEFINE_list("recipes", list(RECIPES), f"Recipes to run, of {', '.join(RECIPES)}.")
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/benchmarks/time_to_robustness", "Where the runs go.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file of the figures.")
_PLOT = flags.DEFINE_string("plot", None, "PNG of validation robust accuracy against minutes.")
_EXAMPLES = flags.DEFINE_integer("test_examples", 340, "Test images for the final worst case.", lower_bound=1)


def _config(name, seed):
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.datasets import DataConfig
    from atalp_tf.training.config import TrainConfig

    recipe = RECIPES[name]
    return TrainConfig.from_flat(
        model_dir=os.path.join(_OUT_DIR.value, f"{name}_seed{seed}"),
        data=DataConfig(name="flowers17", batch_size=32, data_dir=_DATA_DIR.value, image_size=32, seed=seed,
                        augment="flip", cache="memory"),
        train_attack=PGDConfig(EPS, recipe["step"], recipe["steps"]),
        eval_attack=PGDConfig(EPS, EPS / 4, 20),
        attack=recipe["attack"], epochs=recipe["epochs"], schedule=recipe["schedule"],
        learning_rate=recipe["learning_rate"], validate_every=recipe["validate_every"],
        val_steps=recipe["val_steps"], val_examples=recipe["val_examples"], seed=seed, **COMMON,
    )


def _timer():
    import keras

    class Timer(keras.callbacks.Callback):
        """Wall time since the run began and the validation robust accuracy, per validated epoch."""

        def __init__(self):
            super().__init__()
            self.started = time.time()
            self.finished = None
            self.curve = []
            self.validation_seconds = 0.0

        def on_train_end(self, logs=None):
            self.finished = time.time()

        def on_test_begin(self, logs=None):
            self.test_started = time.time()

        def on_test_end(self, logs=None):
            self.validation_seconds += time.time() - self.test_started

        def on_epoch_end(self, epoch, logs=None):
            if "val_pgd_accuracy" in (logs or {}):
                minutes = (time.time() - self.started) / 60
                self.curve.append([minutes, epoch + 1, float(logs["val_pgd_accuracy"])])

    return Timer()


def _worst_case(model_file, config):
    import dataclasses

    from atalp_tf import datasets
    from atalp_tf.evaluation import plan
    from atalp_tf.evaluation import robustness
    from atalp_tf.runs.loading import first_examples
    from atalp_tf.runs.loading import load_classifier
    from atalp_tf.runs.rundir import RunDir

    data = datasets.load(dataclasses.replace(config.data, batch_size=170),
                         saved_split=RunDir(config.model_dir).file(RunDir.SPLIT))
    model = load_classifier(model_file)
    specs = plan.plan([EPS], [20], ("pgd", "apgd_ce", "apgd_t", "square"), step_size=EPS / 4,
                            queries=1000, num_targets=3, num_classes=data.num_classes)
    batches, _ = first_examples(data.test, min(_EXAMPLES.value, data.sizes["test"]), 170)
    report = robustness.evaluate(robustness.logits_of(model), batches, specs,
                                 seed=config.seed, num_classes=data.num_classes)
    worst, _ = report.worst_case()[EPS]
    return {"clean": report.clean_accuracy, "worst_case": worst, "examples": report.num_examples,
            "attacks": {s.name: report.accuracy(s) for s in specs}}


def _run(name, seed):
    from atalp_tf.training import trainer

    config = _config(name, seed)
    timer = _timer()
    results = trainer.run(config, log=lambda line: print(f"[{name} seed {seed}] {line}", flush=True),
                          callbacks=[timer])
    # From the start of the run (data, model, compilation) to the end of its last epoch; the
    # test that every run ends with is the same for all and is left out.
    seconds = timer.finished - timer.started
    test = _worst_case(results["model_path"], config)
    return {"recipe": name, "seed": seed, "minutes": seconds / 60, "validation_share": timer.validation_seconds / seconds,
            "curve": timer.curve, "test": test, "test_pgd20_last": results["test_last"]}


def _mean_se(values):
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def _binomial_se(accuracy, n):
    return math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / n)


def _summary(runs):
    by_recipe = {}
    for run in runs:
        by_recipe.setdefault(run["recipe"], []).append(run)
    reference = {run["seed"]: run for run in by_recipe.get("reference", [])}
    rows = {}
    for name, group in by_recipe.items():
        minutes = _mean_se([r["minutes"] for r in group])
        worst = _mean_se([r["test"]["worst_case"] for r in group])
        row = {"seeds": [r["seed"] for r in group], "minutes": minutes[0],
               "validation_share": statistics.fmean(r["validation_share"] for r in group),
               "clean": statistics.fmean(r["test"]["clean"] for r in group),
               "worst_case": worst[0], "worst_case_se_over_seeds": worst[1]}
        if reference and name != "reference":
            # Per seed: the same split and test set as the reference's run of that seed.
            checks = []
            for r in group:
                ref = reference.get(r["seed"])
                if ref is None:
                    continue
                se = _binomial_se(ref["test"]["worst_case"], ref["test"]["examples"])
                checks.append({
                    "seed": r["seed"], "time_share": r["minutes"] / ref["minutes"],
                    "worst_case_gap": r["test"]["worst_case"] - ref["test"]["worst_case"], "one_se": se,
                    "met": r["minutes"] <= TARGET_SHARE * ref["minutes"]
                    and r["test"]["worst_case"] >= ref["test"]["worst_case"] - se,
                })
            row["target"] = checks
            row["target_met_on_every_seed"] = bool(checks) and all(c["met"] for c in checks)
        rows[name] = row
    return rows


def _plot(path, runs):
    from atalp_tf import plots

    plt = plots.require_matplotlib()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = {}
    for run in runs:
        colour = colours.setdefault(run["recipe"], f"C{len(colours)}")
        minutes, _, accuracy = zip(*run["curve"]) if run["curve"] else ((), (), ())
        axis.plot(minutes, accuracy, marker="o", color=colour, linestyle="-" if run["seed"] == runs[0]["seed"] else "--",
                  label=f"{run['recipe']} (seed {run['seed']})")
    axis.set_xlabel("wall-clock minutes (training, validation, compilation)")
    axis.set_ylabel("validation robust accuracy (PGD)")
    axis.set_title("AT + ALP on 17 Flowers, 32x32, eps 8/255: robust accuracy against time", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv):
    del argv
    import tensorflow as tf

    runs = []
    for seed in (int(s) for s in _SEEDS.value):
        for name in _RECIPES.value:
            runs.append(_run(name, seed))
    summary = _summary(runs)
    print(f"\n{'recipe':<22} {'minutes':>8} {'val share':>9} {'clean':>7} {'worst case':>11} {'time vs ref':>11}  target")
    reference_minutes = summary.get("reference", {}).get("minutes")
    for name, row in summary.items():
        ratio = f"{row['minutes'] / reference_minutes:.2f}" if reference_minutes else ""
        target = "" if "target" not in row else ("met" if row["target_met_on_every_seed"] else "missed")
        print(f"{name:<22} {row['minutes']:>8.2f} {row['validation_share']:>9.0%} {row['clean']:>7.3f} "
              f"{row['worst_case']:>11.3f} {ratio:>11}  {target}")
    result = {
        "runs": runs, "summary": summary, "target_share": TARGET_SHARE,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "tensorflow": tf.__version__},
    }
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)
    if _PLOT.value:
        try:
            _plot(_PLOT.value, runs)
        except ImportError as error:
            print(f"No plot: {error}")


if __name__ == "__main__":
    app.run(main)
