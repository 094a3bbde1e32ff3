"""The evaluation's attacks and worst case, on a tiny standard-trained digits model."""

import numpy as np
import pytest
import tensorflow as tf

from atalp_tf.attacks import apgd
from atalp_tf.evaluation import plan
from atalp_tf.evaluation import robustness
from atalp_tf.evaluation.plan import AttackSpec

EPS = 8 / 255


@pytest.fixture(scope="module")
def batch(digits16):
    _, _, x, y = digits16
    return x[:96].astype(np.float32), y[:96].astype(np.int32)


def _accuracy(model, images, labels):
    return float(np.mean(np.argmax(model(images, training=False), -1) == labels))


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        AttackSpec("fgsm", EPS),
        AttackSpec("pgd", EPS, 5),
        AttackSpec("pgd_targeted", EPS, 5),
        AttackSpec("apgd_ce", EPS, 10),
        AttackSpec("apgd_t", EPS, 5, num_targets=2),
        AttackSpec("square", EPS, 50),
        AttackSpec("rays", EPS, 60),
    ],
    ids=lambda s: s.attack,
)
def test_every_attack_stays_in_its_ball_and_the_pixel_range(standard_model, batch, spec):
    x, y = batch
    run = robustness.prepare(spec, robustness.logits_of(standard_model), seed=0)
    targets = tf.constant((y + 1) % 10)
    x_adv = np.asarray(run(tf.constant(x), tf.constant(y), targets)[0])
    delta = np.abs(x_adv - x).reshape(len(x), -1).max(axis=1)
    assert delta.max() <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    # The attack moved the inputs and hurt the model (the standard model is not robust).
    assert np.median(delta) > 0.5 * EPS
    assert _accuracy(standard_model, x_adv, y) < _accuracy(standard_model, x, y)


def test_apgd_checkpoints_shrink_to_the_floor():
    marks, lengths = apgd.checkpoint_schedule(100)
    ends = [i for i, m in enumerate(marks) if m]
    # Croce & Hein: intervals of 22, 19, 16, 13, 10, 7, 6, 6 ... iterations.
    assert [lengths[i] for i in ends][:7] == [22, 19, 16, 13, 10, 7, 6]
    assert ends[0] == 21


def test_dlr_losses_match_hand_values():
    logits = tf.constant([[4.0, 1.0, 3.0, 0.0, -1.0]])
    # Untargeted: (max_{i != y} z_i - z_y) / (z_1 - z_3) with y = 1: (4 - 1) / (4 - 1).
    np.testing.assert_allclose(apgd.dlr(tf.constant([1]), logits), [1.0], rtol=1e-6)
    # Targeted, y = 0, t = 2: -(4 - 3) / (4 - (1 + 0) / 2).
    np.testing.assert_allclose(
        apgd.targeted_dlr(tf.constant([0]), tf.constant([2]), logits), [-1 / 3.5], rtol=1e-6
    )


@pytest.mark.slow
def test_pgd_accuracy_falls_with_eps_and_iterations(standard_model, batch):
    specs = [AttackSpec("pgd", e, s) for e in (2 / 255, 6 / 255, 12 / 255) for s in (1, 10)]
    report = robustness.evaluate(robustness.logits_of(standard_model), [batch], specs, seed=0)
    by = {(s.eps, s.steps): report.accuracy(s) for s in specs}
    for steps in (1, 10):
        assert by[(2 / 255, steps)] > by[(6 / 255, steps)] > by[(12 / 255, steps)]
    for eps in (6 / 255, 12 / 255):
        assert by[(eps, 10)] < by[(eps, 1)]
    assert by[(12 / 255, 10)] < 0.3 * report.clean_accuracy


@pytest.mark.slow
def test_apgd_and_the_worst_case_are_at_least_as_strong_as_pgd(standard_model, batch):
    specs = [
        AttackSpec("pgd", 4 / 255, 10),
        AttackSpec("apgd_ce", 4 / 255, 10),
        AttackSpec("apgd_t", 4 / 255, 10, num_targets=3),
        AttackSpec("square", 4 / 255, 100),
    ]
    report = robustness.evaluate(robustness.logits_of(standard_model), [batch], specs, seed=0)
    pgd, apgd_ce, apgd_t, square = (report.accuracy(s) for s in specs)
    one_example = 1 / report.num_examples
    assert apgd_ce <= pgd + one_example
    assert apgd_t <= pgd + one_example
    worst, names = report.worst_case()[4 / 255]
    assert len(names) == 4
    assert worst <= min(pgd, apgd_ce, apgd_t, square)
    # Per example: robust under the worst case only if robust under every attack.
    every = np.logical_and.reduce([report.robust[s.name] for s in specs])
    assert worst == pytest.approx(float(np.mean(every)))


@pytest.mark.slow
def test_black_box_transfer_is_weaker_than_gray_box(standard_model, source_model, batch):
    specs = [AttackSpec("pgd", EPS, 10), AttackSpec("pgd", EPS, 10, transfer=True)]
    report = robustness.evaluate(
        robustness.logits_of(standard_model), [batch], specs,
        source=robustness.logits_of(source_model), seed=0,
    )
    gray, black = (report.accuracy(s) for s in specs)
    assert black > gray + 0.1
    assert black < report.clean_accuracy  # the transferred examples still do some harm


@pytest.mark.slow
def test_restarts_only_lower_accuracy_and_a_seed_repeats(standard_model, batch):
    x, y = batch
    batches = [(x[:48], y[:48]), (x[48:], y[48:])]
    one, three = AttackSpec("pgd", 4 / 255, 3), AttackSpec("pgd", 4 / 255, 3, restarts=3)
    square = AttackSpec("square", 4 / 255, 40)
    logits = robustness.logits_of(standard_model)
    first = robustness.evaluate(logits, batches, [one, three, square], seed=3)
    again = robustness.evaluate(logits, batches, [one, three, square], seed=3)
    for spec in (one, three, square):
        np.testing.assert_array_equal(first.robust[spec.name], again.robust[spec.name])
    assert first.accuracy(three) <= first.accuracy(one)


def test_each_attack_is_traced_once_for_a_batch_size(standard_model, batch):
    x, y = batch
    logits = robustness.logits_of(standard_model)
    spec = AttackSpec("apgd_ce", 4 / 255, 3)
    run = robustness.prepare(spec, logits, seed=0)
    for start in (0, 32, 64):
        images, labels = tf.constant(x[start:start + 32]), tf.constant(y[start:start + 32])
        run(images, labels, labels)
    assert run.experimental_get_tracing_count() == 1


def test_plan_covers_the_paper_settings_and_skips_apgd_t_for_two_classes():
    specs = plan.plan([64 / 256, 128 / 256], [10, 200], transfer=True, restarts=2)
    names = [s.name for s in specs]
    assert "pgd-200x2 eps=0.25" in names and "transfer pgd-10x2 eps=0.5" in names
    assert "apgd_t-200 eps=0.25" in names and "rays-1000q eps=0.5" in names
    two = plan.plan([EPS], [10], num_classes=2)
    assert not any(s.attack == "apgd_t" for s in two)
    with pytest.raises(ValueError, match="no source model"):
        robustness.evaluate(lambda t: t, [(np.zeros((1, 16, 16, 1)), [0])], specs)


def _counting_robust_model():
    """A 4-class linear model no attack within eps 0.1 can move off class 0 (its margin is far
    larger than the logits can change), so no attack stops early; it counts its forward
    passes and, through a custom gradient at its input, its backward passes."""
    forwards, backwards = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    w = tf.constant(np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32)) * 1e-3
    bias = tf.constant([100.0, 0.0, -1.0, -2.0])

    @tf.custom_gradient
    def tap(x):
        def gradient(dy):
            with tf.control_dependencies([backwards.assign_add(1)]):
                return tf.identity(dy)
        return tf.identity(x), gradient

    def logits_fn(images):
        with tf.control_dependencies([forwards.assign_add(1)]):
            images = tap(images)
        return tf.matmul(tf.reshape(images, [-1, 48]), w) + bias

    return logits_fn, forwards, backwards


@pytest.mark.slow
@pytest.mark.parametrize("eot", [1, 3], ids=["deterministic", "eot3"])
def test_every_rows_cost_is_the_passes_it_makes(eot):
    from atalp_tf.attacks import core
    from atalp_tf.evaluation.plan import ATTACK_TABLE

    logits_fn, forwards, backwards = _counting_robust_model()
    target = core.EOT(logits_fn, eot) if eot > 1 else logits_fn
    x = np.random.default_rng(1).uniform(size=(6, 4, 4, 3)).astype(np.float32)
    y = np.zeros(6, np.int32)
    for name in ATTACK_TABLE:
        spec = AttackSpec(name, 0.1, 1 if name == "fgsm" else 4, num_targets=2, queries=7, eot_samples=eot)
        run = robustness.prepare(spec, target, seed=0)
        run(tf.constant(x), tf.constant(y), tf.constant(y + 1))  # trace; the counters count this call too
        forwards.assign(0)
        backwards.assign(0)
        adversarial, _ = run(tf.constant(x), tf.constant(y), tf.constant(y + 1))
        counted = (int(backwards.numpy()), int(forwards.numpy() - backwards.numpy()))
        assert np.all(np.argmax(logits_fn(adversarial), -1) == 0), name  # nothing stopped early
        assert counted == spec.cost(num_classes=4), name
