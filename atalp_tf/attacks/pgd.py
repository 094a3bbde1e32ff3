"""Projected gradient descent: the one attack core that training and evaluation share.

Conventions, each a choice that implementations commonly get wrong:

* Inputs are raw pixels in ``pixel_range`` (``(0, 1)`` everywhere in this package); the model
  normalises inside itself, so ``eps`` and ``step_size`` are in the same units as the pixels.
* ``logits_fn`` must run the model in inference mode (``training=False``): calling batch
  norm with ``training=True`` inside the loop would pollute its moving statistics.
* Labels are the true labels for untargeted attacks and the target labels for targeted ones.
* Projection clips once per step to ``[max(x - eps, lo), min(x + eps, hi)]`` (L-inf), or
  rescales to the L2 ball and then clips to the pixel range (clipping toward ``x`` can only
  shrink an L2 perturbation, so the result stays in the ball).
* Input gradients come from ``input_gradient``, always in float32 whatever the Keras dtype
  policy. The loss's gradient with respect to the (float32) logits is scaled per example so
  that its largest entry is 1, and that vector is back-propagated through the network. Under
  ``mixed_float16`` the cross-entropy gradient of a confident example (``1 - p_y``, ~1e-8)
  would otherwise flush to zero as it enters the float16 graph, and the attack would find
  nothing; a summed loss does not prevent that. The scale changes nothing else: PGD and APGD
  use only the gradient's sign (L-inf) or direction (L2).
* The random start is uniform in the eps ball (Madry et al.), clipped to the pixel range; it is
  on by default. FGSM is the one-step, no-random-start, ``step_size == eps`` case.
* Random draws are stateless, from a seed drawn once per call (``draw_seed``). Under a
  distribution strategy with several replicas the replica id is folded into it: one shared
  ``SeedGenerator`` would otherwise give example i of every replica the same start.
"""

import dataclasses

import keras
import tensorflow as tf

from atalp_tf import losses
from atalp_tf.choices import ATTACK_LOSSES
from atalp_tf.choices import NORMS



@dataclasses.dataclass(frozen=True)
class PGDConfig:
    """Settings of one PGD attack.

    Args:
        eps: radius of the perturbation ball, in pixel units (``8/255`` for CIFAR-10).
        step_size: size of one step, in pixel units.
        steps: number of gradient steps; 1 with ``step_size=eps`` and no random start is FGSM.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform point in the eps ball instead of the input.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini-Wagner logit margin).
        targeted: move toward the given labels instead of away from them.
    """

    eps: float
    step_size: float
    steps: int
    norm: str = "linf"
    random_start: bool = True
    loss: str = "ce"
    targeted: bool = False

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"`eps` must be positive. Received: eps={self.eps}")
        if not self.step_size > 0:
            raise ValueError(f"`step_size` must be positive. Received: step_size={self.step_size}")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"`steps` must be a positive integer. Received: steps={self.steps}")
        if self.norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}. Received: norm={self.norm!r}")
        if self.loss not in ATTACK_LOSSES:
            raise ValueError(f"`loss` must be one of {ATTACK_LOSSES}. Received: loss={self.loss!r}")

    @classmethod
    def coerce(cls, value, name="attack"):
        """``value`` as a ``PGDConfig``: one already, its dict (as configs and JSON hold it), or None."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"`{name}` must be a PGDConfig, a dict or None. Received: {name}={value!r}")

    @classmethod
    def fgsm(cls, eps, norm="linf"):
        return cls(eps=eps, step_size=eps, steps=1, norm=norm, random_start=False)

    def to_dict(self):
        return dataclasses.asdict(self)


def objective(config, labels):
    """The per-example quantity PGD *increases*, built from ``config.loss`` and the labels."""
    base = losses.cross_entropy if config.loss == "ce" else losses.margin
    if config.targeted:
        # Toward the target: lower its cross-entropy, or make the target win the margin.
        return lambda logits: -base(labels, logits)
    return lambda logits: base(labels, logits)


def ranked_targets(logits, labels):
    """``[B, K - 1]``: the classes other than each label, from the highest logit down, the
    targets that APGD-T and FAB-T try in turn (AutoAttack's order)."""
    classes = logits.shape[-1]
    ranked = tf.argsort(logits, axis=-1, direction="DESCENDING")
    others = tf.boolean_mask(ranked, tf.not_equal(ranked, tf.cast(labels, ranked.dtype)[:, None]))
    return tf.reshape(others, [-1, classes - 1])


def per_example_norm(v):
    """L2 norm of each example of a batch, shaped to broadcast against it."""
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=list(range(1, v.shape.rank)), keepdims=True))


def draw_seed(seed):
    """A stateless seed (int32 ``[2]``) for one call's random draws.

    Args:
        seed: int, ``keras.random.SeedGenerator`` (advanced by one draw) or None (a fresh
            seed from TensorFlow's global generator).

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


def random_start(x, config, seed, pixel_range=(0.0, 1.0)):
    """A point drawn uniformly from ``config``'s eps ball around ``x``, clipped to the pixels."""
    lo, hi = pixel_range
    return tf.clip_by_value(x + uniform_in_ball(x, config.eps, config.norm, seed), lo, hi)


def gaussian_start(x, seed, scale=0.001):
    """``x + scale * N(0, 1)``: TRADES' start, next to ``x`` (its KL has zero gradient at ``x``)."""
    return x + scale * tf.random.stateless_normal(tf.shape(x), draw_seed(seed))


def input_gradient(logits_fn, x, loss_fn):
    """The input gradient of ``sum(loss_fn(logits))`` up to a positive factor per example.

    Returns ``(loss, logits, gradient)``: the per-example loss and the logits, both float32,
    and the float32 gradient with respect to ``x``. The logits' gradient is computed in float32
    and scaled per example so its largest entry is 1 before it is back-propagated through the
    model, which keeps it from flushing to zero in a float16 network. An example whose loss
    does not depend on its logits (or whose softmax saturated even in float32) keeps a zero
    gradient, which is what the masking checks look for.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        raw_logits = logits_fn(x)
    logits = tf.cast(raw_logits, tf.float32)
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
    return loss, logits, tf.cast(gradient, tf.float32)


def project(x_adv, x, eps, norm, lo, hi):
    """Back into the ``norm`` ball of radius ``eps`` around ``x`` and the pixel range."""
    if norm == "linf":
        return tf.clip_by_value(x_adv, tf.maximum(x - eps, lo), tf.minimum(x + eps, hi))
    delta = x_adv - x
    factor = tf.minimum(1.0, eps / (per_example_norm(delta) + 1e-12))
    return tf.clip_by_value(x + delta * factor, lo, hi)


def ascent_direction(grad, norm):
    """The step direction: the gradient's sign (L-inf) or its unit vector (L2)."""
    if norm == "linf":
        return tf.sign(grad)
    return grad / (per_example_norm(grad) + 1e-12)


def step(x_adv, grad, x, config, pixel_range=(0.0, 1.0)):
    """One PGD update: ``step_size`` along the ascent direction of ``grad``, then back into the
    ball around ``x`` and the pixel range. PGD, FGSM-RS and free training all move by it."""
    lo, hi = pixel_range
    moved = x_adv + config.step_size * ascent_direction(grad, config.norm)
    return tf.stop_gradient(project(moved, x, config.eps, config.norm, lo, hi))


def pgd(logits_fn, x, loss_fn, config, *, pixel_range=(0.0, 1.0), seed=None, start=None):
    """Returns adversarial examples that increase ``loss_fn(logits_fn(x_adv))``.

    Args:
        logits_fn: callable from a batch of pixels to logits, in inference mode.
        x: float32 batch of pixels in ``pixel_range``.
        loss_fn: callable from logits to a per-example loss to increase. ``objective(config,
            labels)`` builds the usual ones; TRADES passes its KL term.
        config: a ``PGDConfig``.
        pixel_range: ``(lo, hi)`` of valid pixels.
        seed: int, ``keras.random.SeedGenerator`` or None, for the random start.
        start: where to start instead of ``x`` or its random start (TRADES starts next to
            ``x``); the ball stays centred on ``x``.
    """
    lo, hi = pixel_range
    x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
    if start is not None:
        x_adv = project(tf.stop_gradient(start), x, config.eps, config.norm, lo, hi)
    elif config.random_start:
        x_adv = random_start(x, config, seed, pixel_range)
    else:
        x_adv = x

    def body(i, x_adv):
        _, _, grad = input_gradient(logits_fn, x_adv, loss_fn)
        return i + 1, step(x_adv, grad, x, config, pixel_range)

    # A while_loop, not a Python loop: evaluation runs hundreds of steps and autograph is off
    # inside Keras' train_step, so the loop must be built explicitly.
    _, x_adv = tf.while_loop(
        lambda i, _: i < config.steps, body, (tf.constant(0), x_adv), parallel_iterations=1
    )
    return x_adv


def attack(logits_fn, x, labels, config, *, pixel_range=(0.0, 1.0), seed=None):
    """PGD with the loss named in ``config`` against ``labels`` (true labels unless targeted)."""
    return pgd(logits_fn, x, objective(config, labels), config, pixel_range=pixel_range, seed=seed)


def compile_attack(logits_fn, config, *, pixel_range=(0.0, 1.0), seed=None):
    """``attack`` as a ``tf.function`` of ``(images, labels)``, traced once for any batch size.

    This is how to run an attack outside a Keras step. Eagerly, TensorFlow back-propagates
    into every convolution's filter as well (its Conv2D gradient always computes both), which
    wastes time and has crashed TF 2.21's oneDNN CPU kernels on some batch shapes; a graph
    prunes that work. ``seed`` (int or None) seeds a generator owned by the returned function,
    so the same seed gives the same sequence of random starts.
    """
    seed_generator = keras.random.SeedGenerator(seed)

    @tf.function(reduce_retracing=True)
    def run(images, labels):
        return attack(logits_fn, images, labels, config, pixel_range=pixel_range, seed=seed_generator)

    return run
