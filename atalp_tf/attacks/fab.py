"""FAB-T (Croce & Hein, ICML 2020), the targeted L-inf Fast Adaptive Boundary attack of AutoAttack.

FAB looks for the smallest perturbation that crosses the decision boundary between the true
class ``y`` and a target ``t``. At each iteration it linearises ``g(z) = z_t - z_y`` at the
current point ``x1``, giving the hyperplane ``{z : w.z = b}`` with ``w = grad g(x1)`` and
``b = w.x1 - g(x1)``, and projects onto that hyperplane, within the pixel box, both ``x1``
and the original ``x0`` (``linf_projection``: the smallest L-inf step that reaches it). The
next point is a convex combination of the two projections, extrapolated by ``eta``:

    x1 <- clip((1 - a) (x1 + eta d1) + a (x0 + eta d2)),   a = min(|d1| / (|d1| + |d2|), alpha_max)

which biases the search toward points near ``x0``. Whenever ``x1`` is misclassified, it is
kept if it is the closest adversarial point so far, and ``x1`` steps back toward ``x0`` by
the factor ``beta``. The search ignores ``eps``; an example counts as broken only if its
closest adversarial point is within ``eps``.

Settings are AutoAttack's standard ones: 100 iterations, ``alpha_max = 0.1``, ``eta = 1.05``,
``beta = 0.9``, no random restart, and the targets are the ``num_targets`` (9) classes the
clean logits rank highest after the true one, tried in turn on the examples still robust.
With no restart FAB-T draws nothing at random (the reference starts its first run at ``x``),
so its entry point takes a seed only to share the call shape of the other attacks.

Under an ``core.EOT`` wrapper (a randomised model) the linearisation is that of the expected
gap and its gradient, and a point counts as adversarial when most of the draws misclassify it.
"""

import tensorflow as tf

from atalp_tf.attacks import core

ALPHA_MAX = 0.1
ETA = 1.05
BETA = 0.9


def linf_projection(points, w, b, pixel_range=(0.0, 1.0)):
    """The smallest L-inf step from each point onto its hyperplane, staying in the pixel box.

    Args:
        points: ``[B, D]`` flattened points inside the box.
        w, b: ``[B, D]`` normals and ``[B]`` offsets of the hyperplanes ``w.z = b``.

    Returns ``d`` (``[B, D]``) with ``w.(points + d) = b`` at the least ``max |d|``. Moving
    coordinate i by ``s_i`` (the sign that brings ``w.z`` toward ``b``) has room ``r_i``
    before the box stops it, so a radius ``lam`` closes ``g(lam) = sum |w_i| min(lam, r_i)``
    of the gap. ``g`` is piecewise linear in ``lam`` with breaks at the sorted ``r_i``: the
    answer is the ``lam`` where it reaches the gap, found from prefix sums over the sorted
    rooms. When even the whole box cannot reach the plane, every coordinate goes to the end
    of its room (the box's corner nearest the plane).
    """
    lo, hi = pixel_range
    gap = tf.reduce_sum(w * points, axis=1) - b
    moves = w != 0
    sign = -tf.sign(gap)[:, None] * tf.sign(w)
    # Coordinates that cannot help (w_i = 0) get more room than any other, so they sort last.
    room = tf.where(moves, tf.where(sign > 0, hi - points, points - lo), 2.0 * (hi - lo))
    weight = tf.where(moves, tf.abs(w), 0.0)
    order = tf.argsort(room, axis=1)
    room_sorted = tf.gather(room, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    closed = tf.cumsum(weight_sorted * room_sorted, axis=1)  # by the coordinates at their limit
    total = tf.reduce_sum(weight, axis=1, keepdims=True)
    rest = total - tf.cumsum(weight_sorted, axis=1)
    reach = closed + room_sorted * rest  # g at each break
    need = tf.abs(gap)
    limited = tf.reduce_sum(tf.cast(reach < need[:, None], tf.int32), axis=1)
    dims = tf.shape(points)[1]
    feasible = limited < dims
    zero = tf.zeros_like(need[:, None])
    closed_before = tf.gather(tf.concat([zero, closed], axis=1), limited, batch_dims=1)
    rest_before = tf.gather(tf.concat([total, rest], axis=1), limited, batch_dims=1)
    radius = tf.math.divide_no_nan(need - closed_before, rest_before)
    step = tf.where(feasible[:, None], tf.minimum(radius[:, None], room), room)
    return tf.where(moves, sign * step, 0.0)


def _linf(v):
    return tf.reduce_max(tf.abs(v), axis=1)


def fab(logits_fn, x, labels, targets, *, eps, steps=100, pixel_range=(0.0, 1.0)):
    """FAB toward ``targets`` from the clean ``x``; returns the closest adversarial point
    found for examples it breaks within ``eps`` (L-inf), ``x`` for the others."""
    lo, hi = pixel_range
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int32)
    targets = tf.cast(targets, tf.int32)
    batch = tf.shape(x)[0]
    x0 = tf.reshape(x, [batch, -1])

    def gap(logits):
        # z_t - z_y: its logit gradient has entries +-1, so input_gradient's scaling leaves
        # the true gradient, which the linearisation needs, unchanged.
        return tf.gather(logits, targets, batch_dims=1) - tf.gather(logits, labels, batch_dims=1)

    def misclassified(points):
        return ~core.mostly_correct(logits_fn, tf.reshape(points, tf.shape(x)), labels)

    def body(i, x1, best, best_distance):
        value, _, grad, _ = core.input_gradient(logits_fn, tf.reshape(x1, tf.shape(x)), gap)
        w = tf.reshape(grad, [batch, -1])
        b = tf.reduce_sum(w * x1, axis=1) - value
        d1 = linf_projection(x1, w, b, pixel_range)
        d2 = linf_projection(x0, w, b, pixel_range)
        a1 = tf.maximum(_linf(d1), 1e-8)
        a2 = tf.maximum(_linf(d2), 1e-8)
        alpha = tf.clip_by_value(a1 / (a1 + a2), 0.0, ALPHA_MAX)[:, None]
        x1 = tf.clip_by_value((1 - alpha) * (x1 + ETA * d1) + alpha * (x0 + ETA * d2), lo, hi)
        adversarial = misclassified(x1)
        distance = _linf(x1 - x0)
        closer = adversarial & (distance < best_distance)
        best = tf.where(closer[:, None], x1, best)
        best_distance = tf.where(closer, distance, best_distance)
        x1 = tf.where(adversarial[:, None], x0 + BETA * (x1 - x0), x1)
        return i + 1, x1, best, best_distance

    _, _, best, best_distance = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), x0, x0, tf.fill([batch], float("inf"))),
        parallel_iterations=1,
    )
    # FAB ignores eps while it searches; a point beyond it is not an answer at this eps.
    found = best_distance <= eps
    return tf.reshape(tf.where(found[:, None], best, x0), tf.shape(x))


def fab_targeted(logits_fn, x, labels, *, eps, steps=100, num_targets=9, pixel_range=(0.0, 1.0)):
    """FAB-T: FAB toward each of the ``num_targets`` classes ranked highest after the true one.

    Each target gets ``steps`` iterations; an example keeps its first success. Needs at least
    2 classes.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int32)
    ranked = core.ranked_targets(core.expected_logits(logits_fn, x), labels)
    best = x
    for r in range(min(num_targets, ranked.shape[-1])):
        candidate = fab(logits_fn, x, labels, ranked[:, r], eps=eps, steps=steps, pixel_range=pixel_range)
        still_right = core.mostly_correct(logits_fn, best, labels)
        best = tf.where(still_right[:, None, None, None], candidate, best)
    return best


def run(logits_fn, x, labels, *, eps, budget, seed=None, num_targets=9, pixel_range=(0.0, 1.0)):
    """The evaluation's entry point: FAB-T with ``budget`` iterations per target. ``seed`` is
    unused (no random start). Returns ``(x_adv, {})``."""
    del seed
    return fab_targeted(logits_fn, x, labels, eps=eps, steps=budget, num_targets=num_targets,
                        pixel_range=pixel_range), {}


def cost(budget, num_classes, *, num_targets=9):
    """``(gradient passes, forward passes)`` of one ``run``: per target, a gradient and an
    adversarial check per iteration and one check of the best so far; one clean ranking."""
    targets = min(num_targets, max(num_classes - 1, 1))
    return budget * targets, budget * targets + targets + 1
