r"""Robust accuracy a user can trust: ``python -m atalp_tf.evaluate --model=RUN_DIR_OR_FILE``.

Runs FGSM, PGD at each ``--eps`` and ``--steps`` (with ``--restarts``), targeted PGD, APGD-CE,
APGD-T, Square and RayS against the model (gray-box), and with ``--source_model`` the same
FGSM and PGD made on that model (black-box, e.g. a ResNet-152 for a ResNet-101). It reports
each attack's accuracy, the per-example worst case over all attacks at each eps, and checks
that flag numbers which may overstate robustness (``atalp_tf.robustness_checks``).

``--model`` is a ``.keras`` file, a training ``model_dir`` (``--checkpoint`` final, best or
last) or its ``export/``. The data default to the run's own test split; ``--dataset`` and
friends name other data. Written to ``--out_dir`` (default ``MODEL_DIR/evaluation``):
``evaluation.json``, ``evaluation.csv`` and, with matplotlib, ``accuracy_vs_iterations.png``.
Pixels are in [0, 1]: ``--eps=8/255`` and ``--eps=0.25`` (the paper's 64/256) both work.
"""

import importlib
import logging
import os
import sys
import time

from absl import app
from absl import flags

from atalp_tf import choices
from atalp_tf.flag_types import DEFINE_pixel_list
from atalp_tf.flag_types import DEFINE_pixel_value

_CHECKPOINTS = ("final", "best", "last")
_OUTPUTS = ("evaluation.json", "evaluation.csv", "accuracy_vs_iterations.png")

_MODEL = flags.DEFINE_string("model", None, ".keras file, training model_dir or its export/.", required=True)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "final", _CHECKPOINTS, "Which model of a model_dir.")
_SOURCE = flags.DEFINE_string("source_model", None, "Black-box source model (same forms as --model).")
_SOURCE_CHECKPOINT = flags.DEFINE_enum("source_checkpoint", "final", _CHECKPOINTS, "Which model of the source's model_dir.")
_DATASET = flags.DEFINE_string("dataset", None, "Data to evaluate on (default: the run's own).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where --dataset lives (flowers17, folder, tfds).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image side (default: the run's).", lower_bound=8)
_SPLIT = flags.DEFINE_enum("split", "test", ("test", "val"), "Which part of the data.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 500, "Evaluate the first N examples.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Examples attacked at once.", lower_bound=1)
_EPS = DEFINE_pixel_list("eps", "8/255", "L-inf radii in [0, 1] pixel units.")
_STEPS = flags.DEFINE_list("steps", ["10", "20", "50"], "PGD iteration counts (the paper: 10 to 200).")
_RESTARTS = flags.DEFINE_integer("restarts", 1, "Random restarts of PGD and targeted PGD.", lower_bound=1)
_STEP_SIZE = DEFINE_pixel_value("step_size", None, "PGD step (default 2.5 * eps / steps; the paper: 1/256).")
_ATTACKS = flags.DEFINE_list(
    "attacks", list(choices.DEFAULT_ATTACKS),
    f"Attacks to run, from {', '.join(choices.ATTACKS)}. autoattack is the standard AutoAttack "
    "(APGD-CE, APGD-T, FAB-T, Square at their fixed budgets), the figure to quote.",
)
_QUERIES = flags.DEFINE_integer("queries", 1000, "Queries of Square and RayS.", lower_bound=10)
_NUM_TARGETS = flags.DEFINE_integer("num_targets", 9, "Target classes of APGD-T.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random start, target and query.")
_IMPORT = flags.DEFINE_list(
    "import", [],
    "Python modules to import before loading the model, so that layer classes they register "
    "(a preprocessing layer of your own, a defence under test) resolve.",
)
_BPDA = flags.DEFINE_list(
    "bpda", [],
    "Names of layers (input transformations that keep the input's shape, such as quantisation "
    "or JPEG) that the gradient attacks differentiate as the identity: BPDA, Athalye et al. 2018.",
)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write (default MODEL_DIR/evaluation).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier evaluation in --out_dir.")


@flags.validator("model", "--model must be an existing .keras file, model_dir or export directory")
def _check_model(path):
    return path is not None and os.path.exists(path)


@flags.validator("source_model", "--source_model must be an existing .keras file, model_dir or export directory")
def _check_source(path):
    return path is None or os.path.exists(path)


@flags.validator("steps", "--steps must be positive integers, e.g. 10,20,50")
def _check_steps(values):
    return bool(values) and all(v.strip().isdigit() and int(v) > 0 for v in values)


@flags.validator("attacks", f"--attacks must name attacks from {', '.join(choices.ATTACKS)}")
def _check_attacks(values):
    return bool(values) and all(v in choices.ATTACKS for v in values)


def _out_dir(run_dir):
    if _OUT_DIR.value:
        return _OUT_DIR.value
    if run_dir is None:
        raise app.UsageError("--out_dir is needed when --model is not inside a training model_dir")
    return os.path.join(run_dir, "evaluation")


def _data(located, image_shape):
    from atalp_tf import datasets
    from atalp_tf import runs

    overrides = dict(batch_size=_BATCH_SIZE.value, image_size=_IMAGE_SIZE.value or image_shape[0])
    if _DATASET.value:
        config = datasets.DataConfig(name=_DATASET.value, data_dir=_DATA_DIR.value, **overrides)
    elif located.run_dir:
        config = runs.data_config(located.run_dir, data_dir=_DATA_DIR.value, **overrides)
    else:
        raise app.UsageError(f"{located.model_file} is not inside a training model_dir: name the data with --dataset")
    data = datasets.load(config, workdir=None)
    split = data.test if _SPLIT.value == "test" else data.val
    return config, data, split.unbatch().take(_NUM_EXAMPLES.value).batch(_BATCH_SIZE.value)


def _curves(report):
    curves = {}
    for spec in report.specs:
        if spec.attack == "pgd":
            label = f"eps {spec.eps * 255:.3g}/255 {spec.box}-box"
            curves.setdefault(label, []).append((spec.steps, report.accuracy(spec)))
    return {k: v for k, v in curves.items() if len(v) > 1}


def _evaluate():
    from atalp_tf import plots
    from atalp_tf import robustness
    from atalp_tf import robustness_checks
    from atalp_tf import robustness_report
    from atalp_tf import runs
    from atalp_tf.export import check_classifier
    from atalp_tf.export import load_classifier

    for module in _IMPORT.value:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(
                f"--import={module}: {error}; the module must be importable from here (installed, "
                "in the current directory or on PYTHONPATH)"
            ) from None
    located = runs.locate(_MODEL.value, _CHECKPOINT.value)
    out_dir = _out_dir(located.run_dir)
    existing = [n for n in _OUTPUTS if os.path.exists(os.path.join(out_dir, n))]
    if existing and not _OVERWRITE.value:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite or another --out_dir")
    model = robustness.straight_through(load_classifier(located.model_file), _BPDA.value)
    image_shape = tuple(getattr(model, "backbone", model).input_shape[1:])
    data_config, data, batches = _data(located, image_shape)
    check_classifier(model, located.model_file, num_classes=data.num_classes, image_shape=data.image_shape)
    source = source_file = None
    if _SOURCE.value:
        source_file = runs.locate(_SOURCE.value, _SOURCE_CHECKPOINT.value).model_file
        source = load_classifier(source_file, num_classes=data.num_classes, image_shape=data.image_shape)
    specs = robustness.plan(
        _EPS.value, sorted({int(s) for s in _STEPS.value}), _ATTACKS.value,
        restarts=_RESTARTS.value, step_size=_STEP_SIZE.value, queries=_QUERIES.value,
        num_targets=_NUM_TARGETS.value, transfer=source is not None, num_classes=data.num_classes,
    )
    started = time.time()
    report = robustness.evaluate(
        robustness.logits_of(model), batches, specs,
        source=robustness.logits_of(source) if source is not None else None,
        seed=_SEED.value, num_classes=data.num_classes,
        progress=lambda done: print(f"  attacked {done} examples ({time.time() - started:.0f} s)", flush=True),
    )
    checks = robustness_checks.run_checks(report)
    title = f"model {located.model_file}" + (f", black-box source {source_file}" if source_file else "")
    print("\n".join(robustness_report.table(report, checks, title)))
    os.makedirs(out_dir, exist_ok=True)
    context = dict(
        model=located.model_file, source_model=source_file, dataset=data_config.name,
        split=_SPLIT.value, seed=_SEED.value, pixel_range=[0.0, 1.0], seconds=time.time() - started,
        class_names=list(data.class_names),
    )
    robustness_report.write_json(os.path.join(out_dir, "evaluation.json"), report, checks, **context)
    robustness_report.write_csv(os.path.join(out_dir, "evaluation.csv"), report)
    written = ["evaluation.json", "evaluation.csv"]
    curves = _curves(report)
    if curves:
        try:
            plots.accuracy_curves(os.path.join(out_dir, "accuracy_vs_iterations.png"), curves, report.clean_accuracy)
            written.append("accuracy_vs_iterations.png")
        except ImportError as error:
            print(f"No PNG written: {error}", file=sys.stderr)
    print("Wrote " + ", ".join(os.path.join(out_dir, w) for w in written))
    return report, checks


class _FirstTracesFilter(logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning. It counts traces of every function made
    from the same Python code, so one first trace per attack of the plan trips it; the plan's
    functions are traced once per batch shape (tests/test_robustness.py counts them)."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.getLogger("tensorflow").addFilter(_FirstTracesFilter())
    from atalp_tf.datasets.images import BadImagesError

    try:
        _evaluate()
    except (FileExistsError, FileNotFoundError, BadImagesError, ValueError) as error:
        print(f"atalp_tf.evaluate: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
