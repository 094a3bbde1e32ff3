"""Models that fight back: random input transformations and softmax outputs.

A randomised model is attacked through the expectation over its draws and scored by its
expected accuracy over fresh draws; the figure must not be above what an independent EOT
attack (foolbox's ``ExpectationOverTransformationWrapper`` around its PGD) gets on the same
images, scored the same way. A model ending in a softmax must give every gradient attack
exactly what its logits give.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from atalp_tf.attacks import autoattack
from atalp_tf.attacks import core
from atalp_tf.evaluation import checks
from atalp_tf.evaluation import report as report_lines
from atalp_tf.evaluation import robustness
from atalp_tf.evaluation.plan import AttackSpec

EPS = 0.04
DRAWS = 10
STEPS = 50


@pytest.fixture(scope="module")
def small_cnn(digits16):
    """A small CNN on digits: cheap passes, so EOT's many draws fit in a unit test."""
    x, y, _, _ = digits16
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    return model


@pytest.fixture(scope="module")
def examples(digits16):
    _, _, x, y = digits16
    return x[:64].astype(np.float32), y[:64].astype(np.int32)


def _noise(logits_fn):
    def noisy(images):
        return logits_fn(tf.clip_by_value(images + tf.random.uniform(tf.shape(images), -0.05, 0.05), 0.0, 1.0))
    return noisy


def _shift(logits_fn):
    def shifted(images):
        # One random shift of up to a pixel per call, for the whole batch.
        return logits_fn(tf.roll(images, shift=tf.random.uniform([2], -1, 2, dtype=tf.int32), axis=[1, 2]))
    return shifted


def _expected_accuracy(logits_fn, images, labels, draws=DRAWS):
    forward = tf.function(logits_fn)
    return np.mean([np.argmax(forward(images), -1) == labels for _ in range(draws)], axis=0)


def _foolbox_eot_pgd(logits_fn, images, labels, restarts=2):
    """foolbox's PGD through its EOT wrapper, per example the lowest expected accuracy over
    ``restarts`` runs (scored like ours: the share of correct fresh draws)."""
    fb = pytest.importorskip("foolbox")
    model = fb.models.ExpectationOverTransformationWrapper(
        fb.TensorFlowModel(tf.function(logits_fn, reduce_retracing=True), bounds=(0, 1)), n_steps=DRAWS
    )
    attack = fb.attacks.LinfPGD(steps=STEPS, abs_stepsize=2.5 * EPS / STEPS, random_start=True)
    shares = _expected_accuracy(logits_fn, images, labels)
    for _ in range(restarts):
        # int64 labels: eagerpy compares them with foolbox's predicted classes, and mixed
        # integer types need a NumPy function that NumPy 2 removed.
        _, adversarial, _ = attack(model, tf.constant(images), tf.constant(labels, tf.int64), epsilons=EPS)
        shares = np.minimum(shares, _expected_accuracy(logits_fn, adversarial.numpy(), labels))
    return float(shares.mean())


@pytest.mark.slow
@pytest.mark.parametrize("transform", [_noise, _shift], ids=["noise", "shift"])
def test_autoattack_on_a_randomised_model_is_no_weaker_than_an_independent_eot_attack(
    small_cnn, examples, transform
):
    x, y = examples
    randomised = transform(robustness.logits_of(small_cnn))
    lines = []
    report = robustness.evaluate(
        randomised, [(x, y)], [AttackSpec("autoattack", EPS, STEPS)], seed=0, eot_samples=DRAWS, log=lines.append
    )
    spec = report.specs[0]
    assert spec.name == f"autoattack-rand-reduced-{STEPS}it-eot{DRAWS} eps={EPS:g}"
    assert list(report.details[spec.name]["after"]) == list(autoattack.RAND_COMPONENTS)
    ours = report.accuracy(spec)
    theirs = _foolbox_eot_pgd(randomised, x, y)
    # Scored the same way (expected accuracy over DRAWS fresh draws): never more than two
    # points above (weaker than) the independent attack; below it is ours finding more.
    assert ours <= theirs + 0.02, (ours, theirs)
    # The figure is an expected accuracy: shares between 0 and 1, with the draws' error.
    shares = report.robust[spec.name]
    assert shares.dtype.kind == "f" and 0 < report.draw_error(shares) < 0.05


def test_eot_gradient_is_the_mean_of_the_draws_exact_gradients():
    # logits = w * (x + n) for a random n: the cross-entropy's gradient differs per draw; the
    # EOT gradient must be the mean of the exact (unscaled) gradients over the same draws.
    w = tf.constant([[1.0, -2.0], [3.0, 0.5]])
    noise = tf.constant([[[0.3, -0.1]], [[-0.4, 0.2]], [[0.05, 0.0]]])
    draw = tf.Variable(0)

    def logits_fn(x):
        n = tf.gather(noise, draw % 3)
        with tf.control_dependencies([draw.assign_add(1)]):
            return tf.matmul(x + n, w)

    x = tf.constant([[0.2, 0.7]])
    labels = tf.constant([1])

    def loss(logits):
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    by_hand = []
    for i in range(3):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(tf.matmul(x + noise[i], w))
        by_hand.append(tape.gradient(value, x))
    draw.assign(0)
    result = core.input_gradient(core.EOT(logits_fn, 3), x, loss)
    np.testing.assert_allclose(result.gradient, np.mean(by_hand, axis=0), rtol=1e-5)
    # Each draw's vote for its predicted class, averaged: shares over the three draws.
    by_hand_votes = np.mean([np.eye(2)[np.argmax(np.matmul(x + noise[i], w), -1)] for i in range(3)], axis=0)
    np.testing.assert_allclose(result.votes, by_hand_votes)


@pytest.mark.slow
def test_a_softmax_model_gets_what_its_logits_get_from_every_gradient_attack(small_cnn, examples):
    x, y = examples
    inputs = keras.Input((16, 16, 1))
    softmax_model = keras.Model(inputs, keras.layers.Softmax()(small_cnn(inputs)))
    specs = [AttackSpec(a, EPS, 10, num_targets=3) for a in ("pgd", "pgd_targeted", "apgd_ce", "apgd_t", "fab_t")]
    specs.append(AttackSpec("fgsm", EPS))
    plain = robustness.evaluate(robustness.logits_of(small_cnn), [(x, y)], specs, seed=0)
    lines = []
    probabilities = robustness.evaluate(robustness.logits_of(softmax_model), [(x, y)], specs, seed=0, log=lines.append)
    for spec in specs:
        np.testing.assert_array_equal(probabilities.robust[spec.name], plain.robust[spec.name], err_msg=spec.name)
    assert probabilities.worst_case() == plain.worst_case()
    assert plain.worst_case()[EPS][0] < plain.clean_accuracy - 0.1  # the attacks did work
    assert "The model outputs probabilities (it ends in a softmax): the attacks use the logits before it" in lines
    assert probabilities.probes["zero_gradient_share"] == 0.0
    fired = {c.name for c in checks.run_checks(probabilities) if c.fired}
    assert "outputs_probabilities" not in fired and "zero_gradients" not in fired


def test_probabilities_without_a_softmax_to_look_behind_are_attacked_through_their_log(small_cnn, examples):
    x, y = examples
    inputs = keras.Input((16, 16, 1))
    # A softmax computed by hand (exp and a division): no Softmax op to recover logits from.
    exp = keras.layers.Activation("exponential")(small_cnn(inputs))
    normalised = keras.Model(inputs, exp / keras.ops.sum(exp, axis=-1, keepdims=True))
    spec = AttackSpec("apgd_ce", EPS, 10)
    plain = robustness.evaluate(robustness.logits_of(small_cnn), [(x, y)], [spec], seed=0)
    lines = []
    through_log = robustness.evaluate(robustness.logits_of(normalised), [(x, y)], [spec], seed=0, log=lines.append)
    assert any("attacks use their logarithm" in line for line in lines)
    assert abs(through_log.accuracy(spec) - plain.accuracy(spec)) <= 2 / len(y)
    assert "outputs_probabilities" in {c.name for c in checks.run_checks(through_log) if c.fired}


def test_autoattack_below_four_classes_says_its_chain_was_cut():
    w = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    x = np.random.default_rng(1).uniform(size=(20, 2, 2, 3)).astype(np.float32)

    def logits_fn(images):
        return tf.matmul(tf.reshape(images, [-1, 12]), w)

    y = np.argmax(logits_fn(x), -1).astype(np.int32)
    report = robustness.evaluate(logits_fn, [(x, y)], [AttackSpec("autoattack", 0.01, 5, queries=20)], seed=0)
    spec = report.specs[0]
    assert list(report.details[spec.name]["after"]) == ["apgd-ce", "fab-t", "square"]
    note = report.notes[spec.name]
    assert note.startswith("apgd-t left out") and "has 3" in note
    assert report.to_dict()["attacks"][0]["note"] == note
    assert f"    note: {note}" in report_lines.table(report, checks.run_checks(report))
