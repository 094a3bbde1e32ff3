r"""Robust accuracy a user can trust: ``python -m atalp_tf.evaluate --model=RUN_DIR_OR_FILE``.

Runs FGSM, PGD at each ``--eps`` and ``--steps`` (with ``--restarts``), targeted PGD, APGD-CE,
APGD-T, Square and RayS against the model (gray-box), and with ``--source_model`` the same
FGSM and PGD made on that model (black-box, e.g. a ResNet-152 for a ResNet-101). It reports
each attack's accuracy, the per-example worst case over all attacks at each eps, and checks
that flag numbers which may overstate robustness (``atalp_tf.evaluation.checks``).

``--model`` is a ``.keras`` file, a training ``model_dir`` (``--checkpoint`` final, best or
last) or its ``export/``. The data default to the run's own test split, and ``--eps`` to the
eps the run trained at; ``--dataset`` and friends name other data. Written to ``--out_dir``
(default ``MODEL_DIR/evaluation``): ``evaluation.json``, ``evaluation.csv`` and, with
matplotlib, ``accuracy_vs_iterations.png``. Pixels are in [0, 1]: ``--eps=8/255`` and
``--eps=0.25`` (the paper's 64/256) both work.
A model whose outputs are random is attacked with EOT over ``--eot_samples`` draws (20 unless
given) and scored by its expected accuracy; one that ends in a softmax through its logits.
"""

import importlib

from absl import app
from absl import flags

from atalp_tf import choices
from atalp_tf import cli
from atalp_tf.cli import DEFINE_pixel_list
from atalp_tf.cli import DEFINE_pixel_value
from atalp_tf.runs.rundir import RunDir

_MODEL = flags.DEFINE_string("model", None, ".keras file, training model_dir or its export/.", required=True)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "final", tuple(RunDir.MODELS), "Which model of a model_dir.")
_SOURCE = flags.DEFINE_string("source_model", None, "Black-box source model (same forms as --model).")
_SOURCE_CHECKPOINT = flags.DEFINE_enum(
    "source_checkpoint", "final", tuple(RunDir.MODELS), "Which model of the source's model_dir."
)
_DATASET = flags.DEFINE_string("dataset", None, "Data to evaluate on (default: the run's own).")
flags.register_validator("dataset", lambda name: name is None or choices.is_dataset(name),
                         f"--dataset must be {choices.DATASET_NAMES}")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where --dataset lives (flowers17, folder, tfds).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image side (default: the run's).", lower_bound=8)
_SPLIT = flags.DEFINE_enum("split", "test", ("test", "val"), "Which part of the data.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 500, "Evaluate the first N examples.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Examples attacked at once.", lower_bound=1)
_EPS = DEFINE_pixel_list(
    "eps", None, "L-inf radii in [0, 1] pixel units (default: the eps the run trained at, else 8/255)."
)
_STEPS = flags.DEFINE_list("steps", ["10", "20", "50"], "PGD iteration counts (the paper: 10 to 200).")
_RESTARTS = flags.DEFINE_integer("restarts", 1, "Random restarts of PGD and targeted PGD.", lower_bound=1)
_STEP_SIZE = DEFINE_pixel_value("step_size", None, "PGD step (default 2.5 * eps / steps; the paper: 1/256).")
_ATTACKS = flags.DEFINE_list(
    "attacks", list(choices.DEFAULT_ATTACKS),
    f"Attacks to run, from {', '.join(choices.ATTACKS)}. autoattack is the standard AutoAttack "
    "(APGD-CE, APGD-T, FAB-T, Square at their fixed budgets), the figure to quote.",
)
_QUERIES = flags.DEFINE_integer("queries", 1000, "Queries of Square and RayS.", lower_bound=10)
_NUM_TARGETS = flags.DEFINE_integer("num_targets", 9, "Target classes of APGD-T and FAB-T.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random start, target and query.")
_EOT_SAMPLES = flags.DEFINE_integer(
    "eot_samples", None,
    "Draws of a randomised model that every gradient, score and query averages (EOT, Athalye et al. "
    "2018); accuracies are then expected accuracies over fresh draws. Default: 20 when two identical "
    "calls of the model disagree, else 1; 1 turns EOT off.",
    lower_bound=1,
)
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


_GROUPS = {
    "model": ["model", "checkpoint", "source_model", "source_checkpoint", "import", "bpda"],
    "data": ["dataset", "data_dir", "image_size", "split", "num_examples", "batch_size"],
    "attacks": ["eps", "attacks", "steps", "restarts", "step_size", "queries", "num_targets", "eot_samples", "seed"],
    "output": ["out_dir", "overwrite"],
}


cli.require_existing("model", "path", "be an existing .keras file, model_dir or export directory", required=True)
cli.require_existing("source_model", "path", "be an existing .keras file, model_dir or export directory")


@flags.validator("steps", "--steps must be positive integers, e.g. 10,20,50")
def _check_steps(values):
    return bool(values) and all(v.strip().isdigit() and int(v) > 0 for v in values)


@flags.validator("attacks", f"--attacks must name attacks from {', '.join(choices.ATTACKS)}")
def _check_attacks(values):
    return bool(values) and all(v in choices.ATTACKS for v in values)


def _import_modules():
    from atalp_tf.errors import UserError

    for module in _IMPORT.value:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UserError(
                f"--import={module}: {error}; the module must be importable from here (installed, "
                "in the current directory or on PYTHONPATH)"
            ) from None


def _evaluate(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _import_modules()
    from atalp_tf.evaluation import runner

    written = runner.evaluate_path(
        _MODEL.value, checkpoint=_CHECKPOINT.value, out_dir=_OUT_DIR.value, overwrite=_OVERWRITE.value,
        eps=_EPS.value, steps=[int(s) for s in _STEPS.value], attacks=_ATTACKS.value, restarts=_RESTARTS.value,
        step_size=_STEP_SIZE.value, queries=_QUERIES.value, num_targets=_NUM_TARGETS.value, seed=_SEED.value,
        source_path=_SOURCE.value, source_checkpoint=_SOURCE_CHECKPOINT.value, dataset=_DATASET.value,
        data_dir=_DATA_DIR.value, image_size=_IMAGE_SIZE.value, split=_SPLIT.value,
        num_examples=_NUM_EXAMPLES.value, batch_size=_BATCH_SIZE.value, bpda=_BPDA.value,
        eot_samples=_EOT_SAMPLES.value,
        log=cli.log,
    )
    print("Wrote " + ", ".join(written))


if __name__ == "__main__":
    app.run(cli.command("atalp_tf.evaluate", _evaluate, __doc__, _GROUPS))
