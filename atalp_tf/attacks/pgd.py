"""Projected gradient descent: the one attack core that training and evaluation share.

Conventions, each a choice that implementations commonly get wrong:

* Inputs are raw pixels in ``pixel_range`` (``(0, 1)`` everywhere in this package); the model
  normalises inside itself, so ``eps`` and ``step_size`` are in the same units as the pixels.
* ``logits_fn`` must run the model in inference mode (``training=False``): calling batch
  norm with ``training=True`` inside the loop would pollute its moving statistics.
* Labels are the true labels for untargeted attacks and the target labels for targeted ones.
* Projection (``core.project``) clips once per step to ``[max(x - eps, lo), min(x + eps, hi)]``
  (L-inf), or rescales to the L2 ball and then clips to the pixel range.
* Input gradients come from ``core.input_gradient``: float32 whatever the Keras dtype policy,
  and under an ``core.EOT`` wrapper the gradient of the expected loss over the model's
  randomness. PGD uses only the gradient's sign (L-inf) or direction (L2).
* The random start is uniform in the eps ball (Madry et al.), clipped to the pixel range; it is
  on by default. FGSM is the one-step, no-random-start, ``step_size == eps`` case.
* Random draws are stateless, from a seed drawn once per call (``core.draw_seed``, which folds
  in the replica id under a distribution strategy).

``run`` and ``cost`` are the evaluation's entry point, the same shape in every attack module.
"""

import dataclasses

import keras
import tensorflow as tf

from atalp_tf import losses
from atalp_tf.attacks import core
from atalp_tf.attacks.core import per_example_norm
from atalp_tf.attacks.core import project
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


def random_start(x, config, seed, pixel_range=(0.0, 1.0)):
    """A point drawn uniformly from ``config``'s eps ball around ``x``, clipped to the pixels."""
    lo, hi = pixel_range
    return tf.clip_by_value(x + core.uniform_in_ball(x, config.eps, config.norm, seed), lo, hi)


def gaussian_start(x, seed, scale=0.001):
    """``x + scale * N(0, 1)``: TRADES' start, next to ``x`` (its KL has zero gradient at ``x``)."""
    return x + scale * tf.random.stateless_normal(tf.shape(x), core.draw_seed(seed))


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
        grad = core.input_gradient(logits_fn, x_adv, loss_fn).gradient
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


def run(logits_fn, x, labels, *, eps, budget, seed=None, step_size, random_start=True, targets=None,
        pixel_range=(0.0, 1.0)):
    """The evaluation's entry point: ``budget`` steps of L-inf PGD on the cross-entropy, away
    from ``labels`` or, with ``targets``, toward them. Returns ``(x_adv, {})``."""
    config = PGDConfig(eps, step_size, budget, random_start=random_start, targeted=targets is not None)
    goal = labels if targets is None else targets
    return attack(logits_fn, x, goal, config, pixel_range=pixel_range, seed=seed), {}


def cost(budget, num_classes, **options):
    """``(gradient passes, forward passes)`` of one ``run`` on a batch: one gradient per step."""
    return budget, 0
