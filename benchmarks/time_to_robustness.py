"""Time to robustness, second edition: which recipe reaches PGD-7 AT + ALP's AutoAttack accuracy
soonest, over three seeds.

    python benchmarks/time_to_robustness.py --data_dir=/data/17flowers --seeds=0,1,2 --judges=2 \
        --output=runs/benchmarks/time_to_robustness.json --plot=runs/benchmarks/time_to_robustness.png

It takes hours on two CPU cores (an AutoAttack run is about 10 minutes a model there), so it
goes on from its --output when started again, and there, on a machine that lacks the models,
trains the runs still to judge again and checks they are the same runs (their validation
curves must repeat the recorded ones; the runs are seeded) before it judges them.

What a user pays for is the hours until a model is as robust as it will get, and what they
quote is its AutoAttack accuracy. Every recipe trains AT + ALP (alpha 0.5, beta 1) on 17 Flowers
at 32x32, a width-16 ResNet-18 at eps 8/255, from each seed (which draws the split, the
weights and the attacks), in this one process, one after another. Each run records its wall
time (data pipeline, compilation and validation included, up to the end of its last epoch)
and the validation robust accuracy of every validated epoch; then its final model is judged
by the package's standard AutoAttack (``atalp_tf.evaluate(attacks=["autoattack"])``: APGD-CE,
APGD-T over 9 targets, FAB-T, Square with 5,000 queries) on the 340 test images.

Recipes (``RECIPES``): ``pgd7_cosine_20`` is ``flags/flowers17_fast_cpu.cfg`` with
``--attack=pgd`` (PGD-7 with step 2/255, cosine learning rate, 20 epochs, PGD-20 validation of
the whole split after every epoch); the single-step ones make their examples with FGSM-RS
(step 1.25 eps) or N-FGSM (noise 2 eps, step eps), follow a one-cycle learning rate (peak 0.1)
and validate twice, on a fixed 170-image subset with PGD-10.

Every run keeps a moving average of its weights (``EMA_MOMENTUM``), and both its weights
and their average are judged: the row ``NAME`` is the recipe without averaging, ``NAME+ema``
the same run's averaged model. Training never reads the average (validation does, which
only times and logs here: the overfitting guard is off and the final model is judged), so
the weights are those a run without averaging would end with, and the pair is a paired
comparison on the same trajectory. Both rows carry the run's wall time, which for the row
without averaging counts the average's updates too (an upper bound on its time).

The reference is ``pgd7_cosine_20+ema``. The targets, printed and in the JSON:
a single-step recipe reaches the reference's AutoAttack accuracy, its mean over seeds no
lower than the reference's mean minus the reference's standard error over seeds, in at most
20% of the reference's mean wall time, with no seed collapsing (no seed's accuracy more than
5 points under the recipe's mean over seeds); and what averaging adds to each recipe, the
mean over seeds of (averaged - own) AutoAttack accuracy and its standard error.
"""

import json
import math
import os
import platform
import statistics
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

EPS = 8 / 255
# 21 batches of 32 per epoch here: a time constant 1 / (1 - m) of 50 steps, 2.4 epochs, as
# 0.999 is on CIFAR-10 at batch 128 (1,000 steps, 2.6 epochs).
EMA_MOMENTUM = 0.98
# TrainConfig settings of every recipe (flags/flowers17_cpu.cfg and flowers17_fast_cpu.cfg).
COMMON = dict(
    architecture="resnet18", width=16, method="at_alp", alpha=0.5, beta=1.0, optimizer="sgd",
    momentum=0.9, weight_decay=5e-4, verbose=2, export=False, overwrite=True,
    ema_momentum=EMA_MOMENTUM, overfit_guard="off",
)
FAST = dict(steps=1, schedule="onecycle", learning_rate=0.1, val_steps=10, val_examples=170)
RECIPES = {
    "pgd7_cosine_20": dict(attack="pgd", steps=7, step=2 / 255, epochs=20, schedule="cosine", learning_rate=0.05,
                           validate_every=1, val_steps=None, val_examples=None),
    # flags/flowers17_onecycle_cpu.cfg: the first edition's recipe.
    "fgsm_rs_onecycle_14": dict(attack="fgsm_rs", step=1.25 * EPS, epochs=14, validate_every=7, **FAST),
    "n_fgsm_onecycle_14": dict(attack="n_fgsm", step=EPS, epochs=14, validate_every=7, **FAST),
}
REFERENCE = "pgd7_cosine_20+ema"
AVERAGED = "+ema"
TARGET_SHARE = 0.20
COLLAPSE = 0.05

_DATA_DIR = flags.DEFINE_string("data_dir", None, "17 Flowers in its official layout.", required=True)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each draws its own split, weights and attacks.")
_RECIPES = flags.DEFINE_list("recipes", list(RECIPES), f"Recipes to run, of {', '.join(RECIPES)}.")
_OUT_DIR = flags.DEFINE_string("out_dir", "runs/benchmarks/time_to_robustness", "Where the runs go.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file of the figures, rewritten after every run.")
_PLOT = flags.DEFINE_string("plot", None, "PNG of AutoAttack accuracy against minutes.")
_EXAMPLES = flags.DEFINE_integer("test_examples", 340, "Test images AutoAttack judges.", lower_bound=1)
_JUDGES = flags.DEFINE_integer("judges", 1, "Processes that run AutoAttack side by side, sharing the cores.",
                               lower_bound=1)


def _config(name, seed, data_dir, out_dir):
    from atalp_tf.attacks import PGDConfig
    from atalp_tf.datasets import DataConfig
    from atalp_tf.training.config import TrainConfig

    recipe = RECIPES[name]
    return TrainConfig.from_flat(
        model_dir=os.path.join(out_dir, f"{name}_seed{seed}"),
        data=DataConfig(name="flowers17", batch_size=32, data_dir=data_dir, image_size=32,
                        augment="flip", cache="memory"),
        train_attack=PGDConfig(EPS, recipe["step"], recipe["steps"]),
        eval_attack=PGDConfig(EPS, EPS / 4, 20),
        attack=recipe["attack"], epochs=recipe["epochs"], schedule=recipe["schedule"],
        learning_rate=recipe["learning_rate"], validate_every=recipe["validate_every"],
        val_steps=recipe["val_steps"], val_examples=recipe["val_examples"], seed=seed, **COMMON,
    )


def _timer(own_weights_file):
    import keras

    class Timer(keras.callbacks.Callback):
        """Wall time since the run began, the validation robust accuracy per validated epoch,
        and at the end the model's own (not averaged) weights, saved to ``own_weights_file``."""

        def __init__(self):
            super().__init__()
            self.started = time.time()
            self.finished = None
            self.curve = []
            self.validation_seconds = 0.0

        def on_train_end(self, logs=None):
            self.finished = time.time()
            self.model.save(own_weights_file)

        def on_test_begin(self, logs=None):
            self.test_started = time.time()

        def on_test_end(self, logs=None):
            self.validation_seconds += time.time() - self.test_started

        def on_epoch_end(self, epoch, logs=None):
            if "val_pgd_accuracy" in (logs or {}):
                minutes = (time.time() - self.started) / 60
                self.curve.append([minutes, epoch + 1, float(logs["val_pgd_accuracy"])])

    return Timer()


def _autoattack(model_file, config, examples):
    import dataclasses

    import atalp_tf
    from atalp_tf import datasets
    from atalp_tf.runs.rundir import RunDir

    data = datasets.load(dataclasses.replace(config.data, batch_size=170),
                         saved_split=RunDir(config.model_dir).file(RunDir.SPLIT))
    started = time.time()
    # One batch: AutoAttack's later attacks run on the few examples left robust, where a CPU
    # spends its time on per-step overhead more than on arithmetic.
    evaluation = atalp_tf.evaluate(atalp_tf.load_classifier(model_file), data.test, eps=EPS,
                                   attacks=["autoattack"], seed=config.seed, batch_size=examples,
                                   num_examples=examples)
    return {"clean": evaluation.clean_accuracy, "autoattack": evaluation.worst_case[EPS],
            "examples": evaluation.report.num_examples, "attacks": evaluation.accuracy,
            "warnings": evaluation.warnings, "seconds": time.time() - started}


def _train(name, seed):
    """Trains ``name`` from ``seed``; its two rows (own weights, averaged), to be judged later."""
    from atalp_tf.training import trainer

    config = _config(name, seed, _DATA_DIR.value, _OUT_DIR.value)
    own_file = os.path.join(_OUT_DIR.value, f"{name}_seed{seed}_own.keras")
    timer = _timer(own_file)
    results = trainer.run(config, log=lambda line: print(f"[{name} seed {seed}] {line}", flush=True),
                          callbacks=[timer])
    # From the start of the run (data, model, compilation) to the end of its last epoch; the
    # test every run ends with is the same for all and is left out.
    seconds = timer.finished - timer.started
    common = {"seed": seed, "minutes": seconds / 60, "validation_share": timer.validation_seconds / seconds,
              "curve": timer.curve}
    return [{"recipe": recipe, **common, "model_file": model_file, "test": None}
            for recipe, model_file in ((name, own_file), (name + AVERAGED, results["model_path"]))]


def _judge(row, data_dir, out_dir, examples):
    """The AutoAttack figures of ``row``'s model (a worker process's task with ``--judges``)."""
    config = _config(row["recipe"].removesuffix(AVERAGED), row["seed"], data_dir, out_dir)
    test = _autoattack(row["model_file"], config, examples)
    print(f"[{row['recipe']} seed {row['seed']}] AutoAttack {test['autoattack']:.4f} clean {test['clean']:.4f} "
          f"({test['seconds'] / 60:.1f} min)", flush=True)
    return test


def _threads_per_judge(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _judge_all(runs, rows, save, commit):
    """Judges ``rows`` in _judging_order, filling in each row's test (with the commit that judged
    it) and saving after each. Rows whose model files are gone are trained again first
    (_recover), a run at a time in the order its rows are to be judged. With ``--judges=N``, N
    processes share the cores and judge each recovered run while the next one trains: only the
    AutoAttack figures of a retrained run count, and they are the same however busy the machine
    is (the recorded wall time stays). AutoAttack's later attacks run on the hundred or so
    examples still robust, where one process keeps two cores only about 60% busy."""
    rows = sorted(rows, key=_judging_order)
    missing = {}
    for row in rows:
        if not os.path.exists(row["model_file"]):
            missing.setdefault((row["recipe"].removesuffix(AVERAGED), row["seed"]), _judging_order(row))
    recovered = sorted(missing, key=missing.get)

    def judged(row, test):
        row["test"] = {**test, "commit": commit}
        save()

    settings = (_DATA_DIR.value, _OUT_DIR.value, _EXAMPLES.value)
    if _JUDGES.value == 1:
        for name, seed in recovered:
            _recover(runs, name, seed)
            save()
        for row in rows:
            judged(row, _judge(row, *settings))
        return
    import concurrent.futures
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // _JUDGES.value)
    with concurrent.futures.ProcessPoolExecutor(
        _JUDGES.value, mp_context=multiprocessing.get_context("spawn"), initializer=_threads_per_judge,
        initargs=(threads,),
    ) as pool:
        futures = {}

        def submit(batch):
            for row in batch:
                futures[pool.submit(_judge, row, *settings)] = row

        def collect(timeout):
            done, _ = concurrent.futures.wait(futures, timeout=timeout)
            for future in done:
                judged(futures.pop(future), future.result())

        submit([row for row in rows if os.path.exists(row["model_file"])])
        for name, seed in recovered:
            retrained = _recover(runs, name, seed)
            save()
            submit([row for row in retrained if row["test"] is None])
            collect(timeout=0)
        while futures:
            collect(timeout=None)


def _recover(runs, name, seed):
    """Trains ``name`` from ``seed`` again for the model files of its rows, which are gone (the
    runs directory of another machine or session), and checks that it is the same run: its
    validation curve must match the recorded one, accuracy for accuracy (the runs are seeded).
    The rows keep the wall time of the run that was timed; returns them."""
    recorded = [r for r in runs if r["recipe"].removesuffix(AVERAGED) == name and r["seed"] == seed]
    again = {r["recipe"]: r for r in _train(name, seed)}
    want = [point[1:] for point in recorded[0]["curve"]]
    got = [point[1:] for point in again[name]["curve"]]
    if len(want) != len(got) or any(a[0] != b[0] or abs(a[1] - b[1]) > 1e-6 for a, b in zip(want, got)):
        raise SystemExit(f"{name} seed {seed} trained again is not the recorded run (validation {got} against "
                         f"{want}): its recorded time cannot be paired with this model; train it anew")
    for row in recorded:
        row["model_file"] = again[row["recipe"]]["model_file"]
    return recorded


def _single_step(recipe):
    return RECIPES[recipe.removesuffix(AVERAGED)]["attack"] != "pgd"


def _judging_order(row):
    """The reference and the averaged single-step models first, the rows the targets need."""
    recipe = row["recipe"]
    rank = 0 if recipe == REFERENCE else 1 if recipe.endswith(AVERAGED) else 2 if _single_step(recipe) else 3
    return rank, row["seed"], recipe


def _mean_se(values):
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def _summary(runs):
    by_recipe = {}
    for run in runs:
        if run["test"] is not None:
            by_recipe.setdefault(run["recipe"], []).append(run)
    reference = by_recipe.get(REFERENCE, [])
    ref_minutes = statistics.fmean(r["minutes"] for r in reference) if reference else None
    ref_aa = _mean_se([r["test"]["autoattack"] for r in reference]) if reference else None
    rows = {}
    for name, group in by_recipe.items():
        aa = [r["test"]["autoattack"] for r in group]
        mean, se = _mean_se(aa)
        row = {
            "seeds": [r["seed"] for r in group], "minutes": statistics.fmean(r["minutes"] for r in group),
            "validation_share": statistics.fmean(r["validation_share"] for r in group),
            "clean": statistics.fmean(r["test"]["clean"] for r in group),
            "clean_per_seed": [r["test"]["clean"] for r in group],
            "autoattack": mean, "autoattack_se": se, "autoattack_per_seed": aa,
            "collapsed_seeds": [r["seed"] for r in group if r["test"]["autoattack"] < mean - COLLAPSE],
        }
        if ref_minutes:
            row["time_share"] = row["minutes"] / ref_minutes
        if ref_aa and _single_step(name):
            row["target"] = {
                "reaches_reference": mean >= ref_aa[0] - ref_aa[1],
                "in_time": row["time_share"] <= TARGET_SHARE,
                "no_collapse": not row["collapsed_seeds"] and len(group) > 1,
            }
            row["target"]["met"] = all(row["target"].values())
        rows[name] = row
    # What averaging adds: per seed, the averaged model's accuracy minus the same run's own.
    for name in list(rows):
        own, averaged = by_recipe.get(name), by_recipe.get(name + AVERAGED)
        if own and averaged:
            pairs = {r["seed"]: r["test"]["autoattack"] for r in averaged}
            gains = [pairs[r["seed"]] - r["test"]["autoattack"] for r in own if r["seed"] in pairs]
            gain, se = _mean_se(gains)
            rows[name + AVERAGED]["averaging_gain"] = {"mean": gain, "se": se, "per_seed": gains}
    return rows


def _plot(path, runs, summary):
    from atalp_tf import plots

    plt = plots.require_matplotlib()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {}
    for name, row in summary.items():
        base = name.removesuffix(AVERAGED)
        colour = colours.setdefault(base, f"C{len(colours)}")
        averaged = name.endswith(AVERAGED)
        right.errorbar([row["minutes"]], [row["autoattack"]], yerr=[row["autoattack_se"]], color=colour,
                       marker="o" if averaged else "s", mfc=colour if averaged else "white", capsize=3,
                       label=f"{name} ({len(row['seeds'])} seeds)")
        right.scatter([row["minutes"]] * len(row["seeds"]), row["autoattack_per_seed"], color=colour, s=8, alpha=0.5)
    for run in runs:
        if run["recipe"].endswith(AVERAGED) and run["curve"]:
            minutes, _, accuracy = zip(*run["curve"])
            left.plot(minutes, accuracy, marker=".", color=colours[run["recipe"].removesuffix(AVERAGED)],
                      alpha=0.7, label=run["recipe"] if run["seed"] == runs[0]["seed"] else None)
    left.set(xlabel="wall-clock minutes (training, validation, compilation)",
             ylabel="validation robust accuracy (PGD), averaged weights")
    left.set_title("validation during training (PGD-20 on 340 or PGD-10 on 170 images)", fontsize=9)
    right.set(xlabel="mean wall-clock minutes per run", ylabel="AutoAttack accuracy, 340 test images")
    right.set_title("final model: mean +/- SE over seeds (dots: seeds; filled: averaged weights)", fontsize=9)
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("AT + ALP on 17 Flowers, 32x32, eps 8/255: robustness against time", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _table(summary):
    lines = [f"{'recipe':<24} {'minutes':>7} {'val':>5} {'x ref':>6} {'clean':>6} {'AutoAttack':>15} "
             f"{'per seed':>20} {'averaging adds':>16}  target"]
    for name, row in summary.items():
        share = f"{row['time_share']:.2f}" if "time_share" in row else ""
        per_seed = " ".join(f"{a:.3f}" for a in row["autoattack_per_seed"])
        gain = row.get("averaging_gain")
        gain = f"{gain['mean']:+.3f}+/-{gain['se']:.3f}" if gain else ""
        target = row.get("target")
        missed = ", ".join(k for k, v in (target or {}).items() if not v and k != "met")
        verdict = "" if target is None else ("met" if target["met"] else f"missed: {missed}")
        lines.append(f"{name:<24} {row['minutes']:>7.2f} {row['validation_share']:>5.0%} {share:>6} "
                     f"{row['clean']:>6.3f} "
                     f"{row['autoattack']:>7.3f}+/-{row['autoattack_se']:.3f} {per_seed:>20} {gain:>16}  {verdict}")
    return "\n".join(lines)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
               "keras": keras.__version__, "commit": commit}
    # Every run trains first (the timed part, one after another on a quiet machine), then
    # AutoAttack judges the models in _judging_order. The JSON is written after each step, and
    # a second start with the same --output goes on from it: hours of work survive a kill, and
    # on another machine, where the models are gone, the runs still to judge train again.
    runs = []
    if _OUTPUT.value and os.path.exists(_OUTPUT.value):
        with open(_OUTPUT.value) as f:
            runs = json.load(f)["runs"]

    def save():
        if _OUTPUT.value:
            os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
            with open(_OUTPUT.value + ".tmp", "w") as f:
                json.dump({"runs": runs, "summary": _summary(runs), "reference": REFERENCE,
                           "ema_momentum": EMA_MOMENTUM, "target_share": TARGET_SHARE, "collapse": COLLAPSE,
                           "machine": machine}, f, indent=2)
            os.replace(_OUTPUT.value + ".tmp", _OUTPUT.value)

    for seed in (int(s) for s in _SEEDS.value):
        for name in _RECIPES.value:
            if not any(r["recipe"] == name and r["seed"] == seed for r in runs):
                runs.extend(_train(name, seed))
                save()
    _judge_all(runs, [r for r in runs if r["test"] is None], save, commit)
    summary = _summary(runs)
    print("\n" + _table(summary))
    if _PLOT.value:
        try:
            _plot(_PLOT.value, runs, summary)
        except ImportError as error:
            print(f"No plot: {error}")


if __name__ == "__main__":
    app.run(main)
