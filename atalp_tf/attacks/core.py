"""What every attack shares: seeds, balls and projection, float32 input gradients, scoring, and
expectation over transformation (EOT) for models with random outputs.

Every attack reads its model only through ``input_gradient``, ``expected_logits`` and
``correct_share``, so EOT is written once, here: an ``EOT`` wrapper around a logits function
turns each of them into its expectation over the model's randomness, and every attack built
on them attacks the expected loss (Athalye, Carlini & Wagner 2018) without code of its own.

Choices, each one that implementations commonly get wrong:

* Input gradients are float32 whatever the Keras dtype policy. The loss's gradient with
  respect to the (float32) logits is scaled per example so that its largest entry is 1, and
  that vector is back-propagated through the network: under ``mixed_float16`` the
  cross-entropy gradient of a confident example (``1 - p_y``, ~1e-8) would otherwise flush to
  zero as it enters the float16 graph. One draw returns the scaled gradient (a positive factor
  per example, which PGD's sign and APGD's sign cannot see); under EOT each draw's scale is
  undone in float32 before the draws are averaged, so the mean is the gradient of the expected
  loss rather than a mean weighted by each draw's confidence.
* A randomised model is scored by the share of ``samples`` fresh draws that classify each
  example correctly (its expected accuracy), never by one draw: one draw can call a clean
  point wrong or an adversarial point right (a known complaint about the reference
  AutoAttack's ``version='rand'``, whose checks are single passes).
* Random draws of the attacks themselves are stateless, from a seed drawn once per call
  (``draw_seed``). Under a distribution strategy with several replicas the replica id is
  folded into it: one shared ``SeedGenerator`` would otherwise give example i of every replica
  the same start.
"""

import keras
import tensorflow as tf

# What an evaluation uses on a model whose outputs are random, unless told otherwise: the
# reference AutoAttack's eot_iter for version='rand'.
DEFAULT_EOT_SAMPLES = 20


class EOT:
    """The logits function of a randomised model, attacked through the expectation over its
    randomness with ``samples`` draws per gradient, score and prediction.

    Calling it is one draw. ``input_gradient``, ``expected_logits`` and ``correct_share`` see
    the wrapper and average ``samples`` independent calls (a loop of calls, not a tiled batch:
    a random layer may draw once per batch, such as a shift of the whole batch).
    """

    def __init__(self, logits_fn, samples=DEFAULT_EOT_SAMPLES):
        if int(samples) != samples or samples < 2:
            raise ValueError(f"`samples` must be an integer of at least 2. Received: samples={samples}")
        self.logits_fn = logits_fn
        self.samples = int(samples)

    def __call__(self, x):
        return self.logits_fn(x)


def one_draw(logits_fn):
    """The plain logits function inside an ``EOT`` wrapper (one draw), else ``logits_fn``."""
    return logits_fn.logits_fn if isinstance(logits_fn, EOT) else logits_fn


def samples_of(logits_fn):
    """Draws each pass costs: ``samples`` for an ``EOT`` wrapper, 1 for a plain logits function."""
    return logits_fn.samples if isinstance(logits_fn, EOT) else 1


def _mean_over_draws(logits_fn, draw):
    """The mean of ``draw()``'s tensors over ``logits_fn.samples`` calls, in a ``while_loop``
    (a Python loop would copy the whole network into the graph once per draw)."""
    first = draw()
    if not isinstance(logits_fn, EOT):
        return first

    def body(i, total):
        return i + 1, tf.nest.map_structure(tf.add, total, draw())

    _, total = tf.while_loop(
        lambda i, _: i < logits_fn.samples, body, (tf.constant(1), first), parallel_iterations=1
    )
    return tf.nest.map_structure(lambda t: t / logits_fn.samples, total)


def expected_logits(logits_fn, x):
    """Float32 logits of ``x``; under ``EOT`` their mean over the draws (what score-based and
    label-only attacks compare, and what ranks the targets of the targeted attacks)."""
    return _mean_over_draws(logits_fn, lambda: tf.cast(logits_fn(x), tf.float32))


def correct_share(logits_fn, x, labels):
    """Per example, whether the model classifies ``x`` as ``labels``: a bool ``[B]`` for a
    deterministic model, the float32 share of correct draws under ``EOT`` (fresh draws)."""
    labels = tf.cast(labels, tf.int32)

    def correct():
        return tf.argmax(logits_fn(x), axis=-1, output_type=tf.int32) == labels

    if not isinstance(logits_fn, EOT):
        return correct()
    return _mean_over_draws(logits_fn, lambda: tf.cast(correct(), tf.float32))


def mostly_correct(logits_fn, x, labels):
    """Per example (bool), whether the model classifies ``x`` as ``labels``; under ``EOT``,
    whether at least half of the draws do (what a search for the nearest adversarial point
    counts as crossing)."""
    correct = correct_share(logits_fn, x, labels)
    return correct >= 0.5 if correct.dtype == tf.float32 else correct


def per_example_norm(v):
    """L2 norm of each example of a batch, shaped to broadcast against it."""
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=list(range(1, v.shape.rank)), keepdims=True))


def per_example(mask, like):
    """A per-example ``[B]`` tensor shaped to broadcast against the batch ``like``."""
    return tf.reshape(mask, [-1] + [1] * (like.shape.rank - 1))


def draw_seed(seed):
    """A stateless seed (int32 ``[2]``) for one call's random draws.

    Args:
        seed: int, ``keras.random.SeedGenerator`` (advanced by one draw) or None (a fresh
            seed from TensorFlow's global generator). An int ``s`` gives ``[s, 0]``.

    In a replica context with several replicas, the replica id is folded in, so each replica
    draws its own noise for its share of the batch.
    """
    if isinstance(seed, keras.random.SeedGenerator):
        seed = tf.cast(seed.next(), tf.int32)
    elif seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    else:
        seed = tf.cast(tf.stack([tf.cast(seed, tf.int64), 0]), tf.int32)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        seed = tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)
    return seed


def uniform_in_ball(x, eps, norm, seed):
    """Offsets drawn uniformly from the ``norm`` ball of radius ``eps``, one per example of ``x``."""
    seed = draw_seed(seed)
    if norm == "linf":
        return tf.random.stateless_uniform(tf.shape(x), seed, -eps, eps)
    # Uniform in the L2 ball: a Gaussian direction times eps * u^(1/d).
    direction_seed, radius_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    direction = tf.random.stateless_normal(tf.shape(x), direction_seed)
    direction /= per_example_norm(direction) + 1e-12
    dims = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    radius = tf.random.stateless_uniform(
        [tf.shape(x)[0]] + [1] * (x.shape.rank - 1), radius_seed
    )
    return direction * eps * radius ** (1.0 / dims)


def project(x_adv, x, eps, norm, lo, hi):
    """Back into the ``norm`` ball of radius ``eps`` around ``x`` and the pixel range.

    L-inf clips once to ``[max(x - eps, lo), min(x + eps, hi)]``; L2 rescales to the ball and
    then clips to the pixel range (clipping toward ``x`` can only shrink an L2 perturbation).
    """
    if norm == "linf":
        return tf.clip_by_value(x_adv, tf.maximum(x - eps, lo), tf.minimum(x + eps, hi))
    delta = x_adv - x
    factor = tf.minimum(1.0, eps / (per_example_norm(delta) + 1e-12))
    return tf.clip_by_value(x + delta * factor, lo, hi)


def ranked_targets(logits, labels):
    """``[B, K - 1]``: the classes other than each label, from the highest logit down, the
    targets that APGD-T and FAB-T try in turn (AutoAttack's order)."""
    classes = logits.shape[-1]
    ranked = tf.argsort(logits, axis=-1, direction="DESCENDING")
    others = tf.boolean_mask(ranked, tf.not_equal(ranked, tf.cast(labels, ranked.dtype)[:, None]))
    return tf.reshape(others, [-1, classes - 1])


class InputGradient(tuple):
    """``(loss, logits, gradient, votes)`` of ``input_gradient``; unpacks like a tuple."""

    __slots__ = ()

    def __new__(cls, loss, logits, gradient, votes):
        return super().__new__(cls, (loss, logits, gradient, votes))

    loss = property(lambda self: self[0])
    logits = property(lambda self: self[1])
    gradient = property(lambda self: self[2])
    votes = property(lambda self: self[3])

    def wrong_share(self, labels):
        """Per example, the share of the draws that misclassified it (0 or 1 for one draw)."""
        return 1.0 - tf.gather(self.votes, tf.cast(labels, tf.int32), axis=1, batch_dims=1)


def _one_draw(logits_fn, x, loss_fn, unscale):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        raw_logits = logits_fn(x)
    # A new tensor: Keras' cross-entropy swaps a Softmax op's output for the op's input, which
    # the logit tape below never recorded (its gradient would be exactly zero).
    logits = tf.identity(tf.cast(raw_logits, tf.float32))
    with tf.GradientTape(watch_accessed_variables=False) as logit_tape:
        logit_tape.watch(logits)
        loss = loss_fn(logits)
        total = tf.reduce_sum(loss)
    direction = logit_tape.gradient(total, logits, unconnected_gradients="zero")
    peak = tf.reduce_max(tf.abs(direction), axis=-1, keepdims=True)
    direction = tf.math.divide_no_nan(direction, peak)
    # A model that ignores its input has a zero gradient, not none.
    gradient = tape.gradient(
        raw_logits, x, output_gradients=tf.cast(direction, raw_logits.dtype),
        unconnected_gradients="zero",
    )
    gradient = tf.cast(gradient, tf.float32)
    if unscale:
        gradient *= per_example(peak, gradient)
    return loss, logits, gradient


def input_gradient(logits_fn, x, loss_fn):
    """The input gradient of ``sum(loss_fn(logits))``, up to a positive factor per example.

    Returns an ``InputGradient``: the per-example loss and the logits, both float32, the
    float32 gradient with respect to ``x``, and ``votes`` (``[B, K]``: the share of draws
    that predicted each class, one-hot for one draw). For an ``EOT`` wrapper the loss, logits
    and gradient are means over its draws (the gradient exact, not scaled). An example whose
    loss does not depend on its logits (or whose softmax saturated even in float32) keeps a
    zero gradient, which is what the masking checks look for.
    """
    randomised = isinstance(logits_fn, EOT)

    def draw():
        loss, logits, gradient = _one_draw(one_draw(logits_fn), x, loss_fn, unscale=randomised)
        votes = tf.one_hot(tf.argmax(logits, axis=-1), tf.shape(logits)[-1])
        return loss, logits, gradient, votes

    return InputGradient(*_mean_over_draws(logits_fn, draw))
