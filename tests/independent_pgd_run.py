"""Runs the toolbox's PGD and ours on one saved model and prints robust accuracies as JSON.

Started in its own process by test_independent_pgd.py, with oneDNN off: the toolbox takes
input gradients with an eager tape, and TF 2.21's oneDNN CPU kernels have crashed the process
("free(): invalid next size") on that path for some batch shapes. Our own attacks are compiled
and have not; this keeps a crash in the reference from taking the test run down.
"""

import json
import sys

import keras
import numpy as np
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import TensorFlowV2Classifier

from atalp_tf import attacks
from atalp_tf import robustness
from atalp_tf.export import load_classifier


def main(model_path, data_path):
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

    def accuracy(images):
        return float(np.mean(np.argmax(model.predict(images, batch_size=len(x), verbose=0), -1) == y))

    results = {}
    logits = robustness.logits_of(model)
    for eps_255 in (4, 8):
        eps = eps_255 / 255
        for inits in (0, 3):
            np.random.seed(0)  # the toolbox draws its random starts from numpy's global state
            theirs = ProjectedGradientDescent(
                classifier, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=10,
                num_random_init=inits, batch_size=len(x), verbose=False,
            ).generate(x, y=y)
            if inits == 0:
                config = attacks.PGDConfig(eps, eps / 4, 10, random_start=False)
                ours = accuracy(attacks.compile_attack(logits, config)(x, y).numpy())
            else:
                spec = robustness.AttackSpec("pgd", eps, 10, restarts=inits, step_size=eps / 4)
                ours = robustness.evaluate(logits, [(x, y)], [spec], seed=0).accuracy(spec)
            results[f"eps{eps_255}_inits{inits}"] = {"ours": ours, "theirs": accuracy(theirs)}
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
