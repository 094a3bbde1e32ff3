"""Our attacks at full strength, on models whose answer is known.

A linear classifier's exact L-inf robustness has a closed form: with inputs far enough from
the pixel bounds that clipping never binds, example i is robust at eps exactly when, for every
other class j, eps * ||w_y - w_j||_1 < z_y - z_j. Every attack's robust accuracy must come
down to that number; an attack that stays above it is weaker than it must be, and would make
a model look more robust than it is.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from atalp_tf import attacks
from atalp_tf.attacks import PGDConfig
from atalp_tf.attacks import fab
from atalp_tf.attacks import rays
from atalp_tf.attacks.training_attack import TrainingAttack
from atalp_tf.evaluation import robustness
from atalp_tf.evaluation.plan import AttackSpec
from atalp_tf.models import backbones
from atalp_tf.models.classifier import RobustClassifier
from atalp_tf.runs.loading import load_classifier

# 12x12x3 with 10 classes: large enough that a weak RayS (a fixed bisection per flip) stays
# far from the exact answer at 5,000 queries, small enough that a sound one converges.
SHAPE, CLASSES, EXAMPLES = (12, 12, 3), 10, 100


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(int(np.prod(SHAPE)), CLASSES)).astype(np.float32)
    x = rng.uniform(0.25, 0.75, size=(EXAMPLES, *SHAPE)).astype(np.float32)
    logits = x.reshape(EXAMPLES, -1) @ weights
    y = logits.argmax(1).astype(np.int32)
    distance = np.full(EXAMPLES, np.inf)
    for j in range(CLASSES):
        gap = logits[np.arange(EXAMPLES), y] - logits[:, j]
        norm = np.abs(weights[:, y] - weights[:, [j]]).sum(axis=0)
        distance = np.minimum(distance, np.where(y == j, np.inf, gap / np.maximum(norm, 1e-12)))
    kernel = tf.constant(weights)

    def logits_fn(images):
        return tf.reshape(images, [tf.shape(images)[0], -1]) @ kernel

    # The exact distances stay far below 0.25, so clipping to [0, 1] never binds.
    assert distance.max() < 0.2
    # Two radii where 70% and 40% of the examples are robust.
    eps_values = [float(np.quantile(distance, q)) for q in (0.3, 0.6)]
    return logits_fn, x, y, distance, eps_values


def _accuracy(logits_fn, images, labels):
    return float(np.mean(np.argmax(logits_fn(images), -1) == labels))


@pytest.mark.slow
@pytest.mark.parametrize("which", [0, 1])
def test_rays_comes_within_five_points_of_the_exact_robust_accuracy(linear, which):
    logits_fn, x, y, distance, eps_values = linear
    eps = eps_values[which]
    exact = float(np.mean(distance > eps))
    run = tf.function(lambda a, b: rays.rays(logits_fn, a, b, eps=eps, queries=5000))
    x_adv, radius, used = (t.numpy() for t in run(x, y))
    ours = _accuracy(logits_fn, x_adv, y)
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    # No example spends more than its budget; and the budget was the limit for those left.
    assert used.max() <= 5000
    assert used[radius > eps].min() == 5000
    # An attack can only show robustness that is there: never below the exact figure.
    assert exact <= ours <= exact + 0.05, (exact, ours)
    # Every radius found is a real boundary crossing, not below the exact distance.
    assert np.all(radius >= distance * (1 - 1e-4))


def test_rays_never_holds_the_batch_for_one_example_bisection(linear):
    # Each example asks one query per pass, whether it is flipping a block or bisecting, so a
    # batch takes at most ``queries`` passes (plus the clean one), which the time estimate
    # counts on. Sharing one bisection loop took several times more passes than queries.
    logits_fn, x, y, _, eps_values = linear
    passes = tf.Variable(0)

    def counted(images):
        passes.assign_add(1)
        return logits_fn(images)

    run = tf.function(lambda a, b: rays.rays(counted, a, b, eps=eps_values[0], queries=300))
    _, _, used = run(x, y)
    assert int(used.numpy().max()) == 300  # some example spent its whole budget
    assert int(passes.numpy()) <= 300 + 1


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["apgd_ce", "apgd_t", "fab_t"])
def test_apgd_and_fab_come_within_two_points_of_the_exact_robust_accuracy(linear, attack):
    logits_fn, x, y, distance, eps_values = linear
    for eps in eps_values:
        spec = AttackSpec(attack, eps, 100, num_targets=9)
        run = robustness.prepare(spec, logits_fn, seed=0)
        x_adv = run(tf.constant(x), tf.constant(y), tf.constant(y))[0].numpy()
        exact = float(np.mean(distance > eps))
        ours = _accuracy(logits_fn, x_adv, y)
        assert np.abs(x_adv - x).max() <= eps + 1e-6
        assert exact <= ours <= exact + 0.02, (attack, eps, exact, ours)


def test_fab_projection_is_the_least_linf_step_onto_the_plane_in_the_box():
    linprog = pytest.importorskip("scipy.optimize").linprog
    rng = np.random.default_rng(1)
    batch, dims = 60, 6
    points = rng.uniform(0, 1, (batch, dims))
    w = rng.normal(size=(batch, dims)) * (rng.uniform(size=(batch, dims)) > 0.2)
    b = rng.normal(size=batch) * 1.5
    step = fab.linf_projection(*(tf.constant(v, tf.float32) for v in (points, w, b))).numpy()
    feasible = 0
    for i in range(batch):
        # min lam over (d, lam): -lam <= d <= lam, w.(p + d) = b, 0 <= p + d <= 1.
        eye = np.eye(dims)
        result = linprog(
            np.r_[np.zeros(dims), 1.0],
            A_ub=np.r_[np.c_[eye, -np.ones(dims)], np.c_[-eye, -np.ones(dims)]], b_ub=np.zeros(2 * dims),
            A_eq=np.r_[w[i], 0.0][None], b_eq=[b[i] - w[i] @ points[i]],
            bounds=[(-p, 1 - p) for p in points[i]] + [(0, None)],
        )
        moved = points[i] + step[i]
        assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
        if result.status == 2:  # the plane misses the box: FAB goes to the nearest corner
            assert abs(w[i] @ moved - b[i]) < abs(w[i] @ points[i] - b[i])
            continue
        feasible += 1
        assert abs(w[i] @ moved - b[i]) < 1e-4
        assert np.abs(step[i]).max() == pytest.approx(result.x[-1], abs=1e-4)
    assert feasible > batch / 2


def _float16_copy(model):
    """The same weights in a model built under mixed_float16 (float16 compute, float32 logits)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        copy = RobustClassifier(backbones.resnet18(10, (16, 16, 1), width=8), method="standard")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    copy.set_weights(model.get_weights())
    return copy


@pytest.fixture(scope="module")
def confident_pair(standard_model):
    """A float32 model with large logit margins, as long training gives, and its float16 twin.

    Scaling the head by 3 keeps every decision and makes most softmax gradients 1 - p_y smaller
    than float16 can hold (6e-8), while float32 still holds them.
    """
    confident = RobustClassifier(backbones.resnet18(10, (16, 16, 1), width=8), method="standard")
    confident.set_weights(standard_model.get_weights())
    head = confident.backbone.get_layer("logits")
    head.set_weights([w * 3 for w in head.get_weights()])
    return confident, _float16_copy(confident)


@pytest.mark.slow
def test_a_mixed_precision_model_is_attacked_as_hard_as_its_float32_twin(confident_pair, digits16, tmp_path):
    confident, half = confident_pair
    _, _, x, y = digits16
    x, y = x[:200], y[:200]
    margins = np.sort(confident(x, training=False).numpy(), axis=1)
    assert np.mean(margins[:, -1] - margins[:, -2] > 17) > 0.3  # 1 - p_y < 6e-8: float16's floor
    path = str(tmp_path / "half.keras")
    half.save(path)
    loaded = load_classifier(path)
    assert loaded.backbone.get_layer("conv1_conv").compute_dtype == "float16"
    specs = [AttackSpec("fgsm", 0.1), AttackSpec("pgd", 0.1, 20), AttackSpec("apgd_ce", 0.1, 20)]
    reports = {
        name: robustness.evaluate(robustness.logits_of(m), [(x, y)], specs, seed=0)
        for name, m in (("float32", confident), ("loaded float16", loaded))
    }
    for spec in specs:
        full, reduced = (reports[n].accuracy(spec) for n in ("float32", "loaded float16"))
        assert reduced <= full + 0.02, (spec.name, full, reduced)
    assert reports["loaded float16"].probes["zero_gradient_share"] < 0.01
    # Training's attack too: every example moves, and it hurts the float16 model as much.
    config = PGDConfig(0.1, 0.025, 10, random_start=False)
    for model in (confident, half):
        model.training_attack = TrainingAttack("pgd", config)
    adversarial = {
        n: tf.function(m.adversarial_examples)(x, y, config).numpy() for n, m in (("full", confident), ("half", half))
    }
    assert (np.abs(adversarial["half"] - x).reshape(len(x), -1).max(1) > 0).all()
    full, reduced = (_accuracy(robustness.logits_of(confident), adversarial[n], y) for n in ("full", "half"))
    assert reduced <= full + 0.02, (full, reduced)


def test_each_replica_draws_its_own_random_start(mirrored):
    strategy = mirrored
    x = tf.fill([4, 6, 6, 1], 0.5)
    with strategy.scope():
        generator = keras.random.SeedGenerator(7)
    config = PGDConfig(0.1, 0.05, 1)

    def draw(images):
        return attacks.random_start(images, config, generator), attacks.gaussian_start(images, generator)

    starts = strategy.run(draw, args=(x,))
    for values in starts:
        first, second = (v.numpy() for v in strategy.experimental_local_results(values))
        assert not np.allclose(first, second)
        assert not np.allclose(first, x.numpy())

