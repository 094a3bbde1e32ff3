"""Our standard AutoAttack against the Adversarial Robustness Toolbox's, on one model and images.

    pip install -e ".[bench]"
    python benchmarks/independent_autoattack.py --model=runs/quickstart --eps=0.1 --num_examples=200

An attack of ours that is weaker than its reference makes a model look more robust than it is,
so this runs both on the same model and images and prints, as JSON on the last line, each
one's robust accuracy, the examples that only one of them broke, and the time each took.

The toolbox's AutoAttack is configured as near the standard one as it goes: APGD-CE and
APGD-DLR (100 iterations, one start each) and Square (``--art_square_queries``, 5,000 in the
standard version), each on the examples the earlier ones left robust. It has no targeted APGD
and no FAB, so an honest AutoAttack of ours should be at least as strong.

``--model`` is a ``.keras`` file or a training run (its test split is used); ``--data`` an
``.npz`` of ``x`` (pixels in [0, 1]) and ``y`` instead. The toolbox takes its input gradients
eagerly, which has crashed TF 2.21's oneDNN CPU kernels on some batch shapes: this script
turns oneDNN off for itself.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, ".keras file or training model_dir.", required=True)
_DATA = flags.DEFINE_string("data", None, ".npz with x and y (default: the run's test split).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 200, "First N examples.", lower_bound=1)
_EPS = flags.DEFINE_float("eps", 8 / 255, "L-inf radius in [0, 1] pixel units.", lower_bound=0.0)
_ART_SQUARE_QUERIES = flags.DEFINE_integer("art_square_queries", 5000, "Queries of the toolbox's Square.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "JSON file to write the figures to.")


def _examples(located):
    import numpy as np

    from atalp_tf import datasets
    from atalp_tf import runs

    if _DATA.value:
        data = np.load(_DATA.value)
        return data["x"][: _NUM_EXAMPLES.value].astype(np.float32), data["y"][: _NUM_EXAMPLES.value].astype(np.int32)
    config = runs.data_config(located.run_dir, batch_size=_NUM_EXAMPLES.value)
    images, labels = next(iter(datasets.load(config).test.unbatch().batch(_NUM_EXAMPLES.value)))
    return images.numpy(), labels.numpy()


def main(argv):
    del argv
    import keras
    import numpy as np
    from art.attacks.evasion import AutoAttack
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    from atalp_tf import robustness
    from atalp_tf import runs
    from atalp_tf.export import load_classifier

    located = runs.locate(_MODEL.value)
    model = load_classifier(located.model_file)
    x, y = _examples(located)
    eps = _EPS.value
    classifier = TensorFlowV2Classifier(
        model=lambda images, training=False: model(images, training=False),
        nb_classes=int(model(x[:1], training=False).shape[-1]),
        input_shape=x.shape[1:],
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    np.random.seed(0)  # the toolbox draws from numpy's global state
    apgd = dict(norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=100, nb_random_init=1, batch_size=len(x), verbose=False)
    theirs = AutoAttack(
        classifier, norm=np.inf, eps=eps, eps_step=2 * eps, batch_size=len(x),
        attacks=[
            AutoProjectedGradientDescent(classifier, loss_type="cross_entropy", **apgd),
            AutoProjectedGradientDescent(classifier, loss_type="difference_logits_ratio", **apgd),
            SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=_ART_SQUARE_QUERIES.value, p_init=0.8,
                         nb_restarts=1, batch_size=len(x), verbose=False),
        ],
    )
    started = time.time()
    adversarial = theirs.generate(x, y=y)
    seconds_theirs = time.time() - started
    their_robust = np.argmax(model.predict(adversarial, batch_size=len(x), verbose=0), -1) == y
    spec = robustness.AttackSpec("autoattack", eps, 100)
    started = time.time()
    report = robustness.evaluate(robustness.logits_of(model), [(x, y)], [spec], seed=0)
    ours_robust = report.robust[spec.name]
    result = {
        "model": located.model_file, "examples": len(x), "eps": eps, "eps_255": eps * 255,
        "clean": report.clean_accuracy,
        "theirs": float(their_robust.mean()), "ours": report.accuracy(spec),
        "ours_after_each": report.after_each_component(spec),
        "only_theirs_broke": int(np.sum(~their_robust & ours_robust)),
        "only_ours_broke": int(np.sum(their_robust & ~ours_robust)),
        "art_square_queries": _ART_SQUARE_QUERIES.value,
        "seconds": {"theirs": seconds_theirs, "ours": time.time() - started},
    }
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
