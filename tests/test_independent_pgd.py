"""Our PGD against the Adversarial Robustness Toolbox's on the same model, eps, steps and images."""

import numpy as np
import pytest

from atalp_tf import attacks
from atalp_tf import robustness
from atalp_tf.robustness import AttackSpec

art_classification = pytest.importorskip(
    "art.estimators.classification", reason="the comparison needs adversarial-robustness-toolbox (the test extra)"
)
art_evasion = pytest.importorskip("art.attacks.evasion")


def _art_pgd(model, x, y, eps, steps, random_inits):
    import keras

    classifier = art_classification.TensorFlowV2Classifier(
        model=lambda images, training=False: model(images, training=False),
        nb_classes=10,
        input_shape=x.shape[1:],
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    attack = art_evasion.ProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=steps,
        num_random_init=random_inits, batch_size=len(x), verbose=False,
    )
    return attack.generate(x, y=y)


def _accuracy(model, images, labels):
    return float(np.mean(np.argmax(model(images, training=False), -1) == labels))


@pytest.mark.parametrize("eps", [4 / 255, 8 / 255])
def test_pgd_matches_the_toolbox_without_random_start(standard_model, digits16, eps):
    _, _, x, y = digits16
    x, y = x[:200].astype(np.float32), y[:200].astype(np.int32)
    config = attacks.PGDConfig(eps, eps / 4, 10, random_start=False)
    ours = _accuracy(standard_model, attacks.compile_attack(robustness.logits_of(standard_model), config)(x, y), y)
    theirs = _accuracy(standard_model, _art_pgd(standard_model, x, y, eps, 10, random_inits=0), y)
    # The same deterministic algorithm: only float rounding may move an example or two.
    assert abs(ours - theirs) <= 0.02
    assert ours <= theirs + 0.01


def test_pgd_with_random_start_and_restarts_is_not_weaker_than_the_toolbox(standard_model, digits16):
    _, _, x, y = digits16
    x, y = x[:200].astype(np.float32), y[:200].astype(np.int32)
    eps = 8 / 255
    theirs = _accuracy(standard_model, _art_pgd(standard_model, x, y, eps, 10, random_inits=1), y)
    single = AttackSpec("pgd", eps, 10, step_size=eps / 4)
    restarted = AttackSpec("pgd", eps, 10, restarts=3, step_size=eps / 4)
    report = robustness.evaluate(robustness.logits_of(standard_model), [(x, y)], [single, restarted], seed=0)
    assert abs(report.accuracy(single) - theirs) <= 0.02
    assert report.accuracy(restarted) <= theirs
