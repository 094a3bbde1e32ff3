"""Auto-PGD (Croce & Hein, ICML 2020), the gradient attacks of AutoAttack, for the L-inf ball.

APGD is PGD with momentum (0.75) whose step size starts at ``2 * eps`` and halves, per
example, at checkpoints where the loss oscillated (it rose in at most 75% of the steps since
the last checkpoint) or where the best loss did not improve since a checkpoint that kept its
step size; on halving, the example restarts from its best point so far. It needs no step-size
tuning, which is why it exposes defences that look robust only at one PGD step size.

Two losses, as in AutoAttack:

* ``apgd(..., loss="ce")``: cross-entropy, untargeted;
* ``apgd_targeted``: the targeted DLR loss ``-(z_y - z_t) / (z_1 - (z_3 + z_4) / 2)`` (sorted
  logits), scale-invariant, so it is not fooled by a model that inflates or shrinks its logits,
  against each of the ``num_targets`` classes the model ranks highest after the true one.

* ``apgd(..., loss_fn=dlr)``: the untargeted DLR loss, the second attack of the reference's
  ``version='rand'`` for randomised models.

The returned point is, per example, the first iterate the model misclassifies (away from the
true label, for the targeted version too), else the iterate of highest loss. Under an
``core.EOT`` wrapper (a randomised model) the gradient and loss are expectations over the
draws, and the returned point is the iterate with the highest share of misclassifying draws
(ties: the higher expected loss), not the first that one lucky draw misclassified. Projection,
the float32 input gradient and ``training=False`` inside ``logits_fn`` follow
``atalp_tf.attacks.core``.
"""

import tensorflow as tf

from atalp_tf import losses
from atalp_tf.attacks import core

MOMENTUM = 0.75
OSCILLATION = 0.75  # rho: halve the step if the loss rose in at most this share of the steps


def checkpoint_schedule(steps):
    """Iterations that end a checkpoint interval, and each interval's length.

    Intervals start at 22% of ``steps`` and shrink by 3% of it each time, to no less than 6%.
    """
    first, shrink, shortest = (max(int(share * steps), 1) for share in (0.22, 0.03, 0.06))
    marks, lengths = [False] * steps, [0] * steps
    length, since = first, 0
    for i in range(steps):
        since += 1
        if since == length:
            marks[i], lengths[i] = True, length
            length, since = max(length - shrink, shortest), 0
    return marks, lengths


def _sorted_logits(logits):
    return tf.sort(logits, axis=-1, direction="DESCENDING")


def _logit_of(labels, logits):
    return tf.gather(logits, tf.cast(labels, tf.int32), axis=1, batch_dims=1)


def dlr(labels, logits):
    """Untargeted DLR loss: ``-(z_y - max_{i != y} z_i) / (z_1 - z_3)``; needs 3+ classes."""
    ranked = _sorted_logits(logits)
    # losses.margin is max_{i != y} z_i - z_y.
    return losses.margin(labels, logits) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def targeted_dlr(labels, targets, logits):
    """Targeted DLR loss of Croce & Hein, increasing as ``targets`` gains on ``labels``; 4+ classes."""
    ranked = _sorted_logits(logits)
    gap = _logit_of(labels, logits) - _logit_of(targets, logits)
    return -gap / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)


def apgd(logits_fn, x, labels, *, eps, steps, loss_fn=None, pixel_range=(0.0, 1.0), seed=None):
    """Untargeted APGD; ``loss_fn(logits)`` defaults to cross-entropy against ``labels``.

    Args:
        logits_fn: pixels to logits, in inference mode.
        x: float32 batch of pixels; labels: their true classes.
        eps: L-inf radius in pixel units; steps: iterations (AutoAttack uses 100).
        loss_fn: per-example loss to increase (``targeted_dlr`` via ``apgd_targeted``).
        seed: int, ``keras.random.SeedGenerator`` or None, for the random start.
    """
    lo, hi = pixel_range
    x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
    labels = tf.cast(labels, tf.int32)
    if loss_fn is None:
        loss_fn = lambda logits: losses.cross_entropy(labels, logits)  # noqa: E731
    marks, lengths = checkpoint_schedule(steps)
    marks, lengths = tf.constant(marks), tf.constant(lengths, tf.float32)

    randomised = core.samples_of(logits_fn) > 1

    def evaluate(x_adv):
        result = core.input_gradient(logits_fn, x_adv, loss_fn)
        return result.loss, result.gradient, result.wrong_share(labels)

    x_adv = core.project(x + core.uniform_in_ball(x, eps, "linf", seed), x, eps, "linf", lo, hi)
    loss, grad, wrong = evaluate(x_adv)
    batch = tf.shape(x)[0]
    state = dict(
        x_adv=x_adv,
        velocity=tf.zeros_like(x),
        grad=grad,
        loss=loss,
        x_best=x_adv,
        grad_best=grad,
        loss_best=loss,
        x_found=x_adv,
        found=wrong,
        loss_found=loss,
        step=tf.fill([batch], 2.0 * eps),
        rises=tf.zeros([batch]),
        loss_best_at_mark=loss,
        halved_at_mark=tf.ones([batch], tf.bool),
    )

    def body(i, s):
        step = core.per_example(s["step"], x)
        momentum = tf.where(i > 0, MOMENTUM, 1.0)
        z = core.project(s["x_adv"] + step * tf.sign(s["grad"]), x, eps, "linf", lo, hi)
        x_new = s["x_adv"] + momentum * (z - s["x_adv"]) + (1.0 - momentum) * s["velocity"]
        x_new = core.project(x_new, x, eps, "linf", lo, hi)
        loss, grad, wrong = evaluate(x_new)
        s = dict(s)
        s["velocity"] = x_new - s["x_adv"]
        # Keep the iterate most draws misclassify: for one draw, the first misclassified one.
        better = wrong > s["found"]
        if randomised:
            better |= (wrong == s["found"]) & (loss > s["loss_found"])
        s["x_found"] = tf.where(core.per_example(better, x), x_new, s["x_found"])
        s["found"] = tf.where(better, wrong, s["found"])
        s["loss_found"] = tf.where(better, loss, s["loss_found"])
        s["rises"] += tf.cast(loss > s["loss"], tf.float32)
        improved = loss > s["loss_best"]
        s["x_best"] = tf.where(core.per_example(improved, x), x_new, s["x_best"])
        s["grad_best"] = tf.where(core.per_example(improved, x), grad, s["grad_best"])
        s["loss_best"] = tf.where(improved, loss, s["loss_best"])
        s["x_adv"], s["grad"], s["loss"] = x_new, grad, loss

        def at_mark():
            oscillating = s["rises"] <= OSCILLATION * lengths[i]
            stalled = tf.logical_and(
                tf.logical_not(s["halved_at_mark"]), s["loss_best_at_mark"] >= s["loss_best"]
            )
            halve = tf.logical_or(oscillating, stalled)
            back = core.per_example(halve, x)
            return dict(
                s,
                step=tf.where(halve, s["step"] / 2.0, s["step"]),
                x_adv=tf.where(back, s["x_best"], s["x_adv"]),
                grad=tf.where(back, s["grad_best"], s["grad"]),
                rises=tf.zeros_like(s["rises"]),
                loss_best_at_mark=s["loss_best"],
                halved_at_mark=halve,
            )

        s = tf.cond(marks[i], at_mark, lambda: s)
        return i + 1, s

    _, state = tf.while_loop(
        lambda i, _: i < steps, body, (tf.constant(0), state), parallel_iterations=1
    )
    found = core.per_example(state["found"] > 0, x)
    return tf.stop_gradient(tf.where(found, state["x_found"], state["x_best"]))


def apgd_targeted(
    logits_fn, x, labels, *, eps, steps, num_targets=9, pixel_range=(0.0, 1.0), seed=None
):
    """APGD-T: targeted DLR toward each of the top ``num_targets`` wrong classes in turn.

    Each target gets ``steps`` iterations, on the examples still classified correctly. The
    target classes are ranked by the clean logits (expected logits under ``EOT``). Needs at
    least 4 classes. A deterministic model keeps each example's first success; a randomised one
    keeps the candidate with the lowest share of correct fresh draws.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int32)
    clean_logits = core.expected_logits(logits_fn, x)
    classes = clean_logits.shape[-1]
    if classes is None or classes < 4:
        raise ValueError(f"The targeted DLR loss needs at least 4 classes; this model has {classes}")
    others = core.ranked_targets(clean_logits, labels)
    randomised = core.samples_of(logits_fn) > 1
    best = x
    # The evaluation scores the clean point itself; a candidate needs only to beat the others.
    best_share = tf.ones([tf.shape(x)[0]]) if randomised else None
    for r in range(min(num_targets, classes - 1)):
        targets = others[:, r]
        candidate = apgd(
            logits_fn,
            x,
            labels,
            eps=eps,
            steps=steps,
            loss_fn=lambda logits, t=targets: targeted_dlr(labels, t, logits),
            pixel_range=pixel_range,
            seed=seed,
        )
        if randomised:
            share = core.correct_share(logits_fn, candidate, labels)
            replace, best_share = share < best_share, tf.minimum(share, best_share)
        else:
            # Keep the first success per example; a later target cannot undo it.
            replace = core.correct_share(logits_fn, best, labels)
        best = tf.where(core.per_example(replace, x), candidate, best)
    return best


def run(logits_fn, x, labels, *, eps, budget, seed=None, loss="ce", num_targets=9, pixel_range=(0.0, 1.0)):
    """The evaluation's entry point: APGD with ``budget`` iterations and ``loss`` ``"ce"``,
    ``"dlr"`` (untargeted) or ``"targeted_dlr"`` (APGD-T over ``num_targets``). Returns
    ``(x_adv, {})``."""
    if loss == "targeted_dlr":
        x_adv = apgd_targeted(logits_fn, x, labels, eps=eps, steps=budget, num_targets=num_targets,
                              pixel_range=pixel_range, seed=seed)
    else:
        labels = tf.cast(labels, tf.int32)
        loss_fn = None if loss == "ce" else (lambda logits: dlr(labels, logits))
        x_adv = apgd(logits_fn, x, labels, eps=eps, steps=budget, loss_fn=loss_fn, pixel_range=pixel_range,
                     seed=seed)
    return x_adv, {}


def cost(budget, num_classes, *, loss="ce", num_targets=9):
    """``(gradient passes, forward passes)`` of one ``run``: the start and each iteration take a
    gradient; APGD-T adds the clean ranking and one check per target."""
    if loss != "targeted_dlr":
        return budget + 1, 0
    targets = min(num_targets, num_classes - 1)
    return (budget + 1) * targets, targets + 1
