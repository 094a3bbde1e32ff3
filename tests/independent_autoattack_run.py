"""Runs the toolbox's AutoAttack and ours on one saved model and prints robust accuracies as JSON.

Started in its own process by test_independent_autoattack.py, with oneDNN off for the same
reason as independent_pgd_run.py. The toolbox's AutoAttack is configured as close to the
standard one as it goes: APGD-CE and APGD-DLR (100 iterations, one start each) and Square
(5,000 queries), each on the examples the earlier ones left robust. It has no targeted APGD
and no FAB, so it is not identical to ours; an honest AutoAttack of ours is at least as strong.
"""

import json
import sys
import time

import keras
import numpy as np
from art.attacks.evasion import AutoAttack
from art.attacks.evasion import AutoProjectedGradientDescent
from art.attacks.evasion import SquareAttack
from art.estimators.classification import TensorFlowV2Classifier

from atalp_tf import robustness
from atalp_tf.export import load_classifier


def main(model_path, data_path, eps):
    eps = float(eps)
    model = load_classifier(model_path)
    data = np.load(data_path)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int32)
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
            SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=5000, p_init=0.8, nb_restarts=1,
                         batch_size=len(x), verbose=False),
        ],
    )
    started = time.time()
    adversarial = theirs.generate(x, y=y)
    seconds_theirs = time.time() - started
    their_robust = np.argmax(model.predict(adversarial, batch_size=len(x), verbose=0), -1) == y
    spec = robustness.AttackSpec("autoattack", eps, 100)
    started = time.time()
    report = robustness.evaluate(robustness.logits_of(model), [(x, y)], [spec], seed=0)
    print(json.dumps({
        "theirs": float(their_robust.mean()), "ours": report.accuracy(spec),
        "ours_after_each": report.after_each_component(spec),
        # Examples each broke that the other did not.
        "only_theirs_broke": int(np.sum(~their_robust & report.robust[spec.name])),
        "only_ours_broke": int(np.sum(their_robust & ~report.robust[spec.name])),
        "seconds": {"theirs": seconds_theirs, "ours": time.time() - started},
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
