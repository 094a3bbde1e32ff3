"""What a training attack is: the examples ``RobustClassifier`` makes each batch, by kind.

The one place that decides what each kind (``choices.TRAIN_ATTACKS``) means, its default step,
and when a step deserves a warning. Every kind keeps the method's loss; only the examples
change:

* ``pgd``: ``steps`` steps of PGD from a random start (Madry et al.); default step eps / 4.
* ``fgsm_rs``: one signed step from a uniform random start (Wong et al. 2020, "Fast is better
  than free"); default step 1.25 eps, the largest they found safe. Larger steps invite
  catastrophic overfitting, so they are warned about.
* ``free``: each batch replayed ``free_replays`` times (Shafahi et al. 2019); every replay's
  one backward pass moves the perturbation by the step (default eps) while the weights descend.
* ``n_fgsm``: one signed step (default eps) from uniform noise in ``[-k eps, k eps]``, k = 2,
  and no projection back onto the eps ball, only onto the pixel range (de Jorge et al. 2022,
  "Make some noise"): the noise and the unclipped step are what keep single-step training from
  overfitting catastrophically, at FGSM-RS's cost. Its examples may lie up to ``(k + 1) eps``
  from ``x``; robustness is still judged at eps.

A PGD step larger than eps lands on the ball's surface every time, so the attack is no
stronger than FGSM: that too is warned about, for training and for the evaluation attack.
"""

import dataclasses

import tensorflow as tf

from atalp_tf import pixels
from atalp_tf.attacks import core
from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.attacks.pgd import ascent_direction

# The default step of each kind, as a multiple of eps.
DEFAULT_STEP = {"pgd": 0.25, "fgsm_rs": 1.25, "free": 1.0, "n_fgsm": 1.0}
# The default step of the attack that validates and tests a training run, as a multiple of eps.
EVAL_STEP = 0.25
# N-FGSM's noise: uniform in [-k eps, k eps] (de Jorge et al.'s k = 2).
N_FGSM_NOISE = 2.0
FGSM_STEP_LIMIT = 1.25
FGSM_STEP_WARNING = "FGSM training with a step"


def config(kind, eps, *, step_size=None, steps=7, **settings):
    """The ``PGDConfig`` of a training attack of ``kind``: the kind's default step unless one is
    given, and one step for the single-step kinds. ``settings``: norm, random_start, loss."""
    step_size = step_size or eps * DEFAULT_STEP[kind]
    return PGDConfig(eps, step_size, steps if kind == "pgd" else 1, **settings)


def evaluation(eps, *, step_size=None, steps=20, **settings):
    """The ``PGDConfig`` that validates and tests a training run: PGD with a step of
    ``EVAL_STEP * eps`` unless one is given. ``settings``: norm, random_start, loss."""
    return PGDConfig(eps, step_size or eps * EVAL_STEP, steps, **settings)


def as_run(kind, config):
    """What the train step runs for ``config``: FGSM-RS is always one step from a random start."""
    if kind == "fgsm_rs":
        return dataclasses.replace(config, steps=1, random_start=True)
    return config


def noisy_fgsm(logits_fn, x, loss_fn, config, *, seed=None, noise=N_FGSM_NOISE, pixel_range=(0.0, 1.0)):
    """N-FGSM's examples: ``x`` plus noise uniform in the ``noise * eps`` ball, then one step of
    ``config.step_size`` up ``loss_fn``'s gradient there, clipped to the pixel range only."""
    lo, hi = pixel_range
    x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
    start = tf.clip_by_value(x + core.uniform_in_ball(x, noise * config.eps, config.norm, seed), lo, hi)
    grad = core.input_gradient(logits_fn, start, loss_fn).gradient
    return tf.stop_gradient(tf.clip_by_value(start + config.step_size * ascent_direction(grad, config.norm), lo, hi))


def advice(kind, config):
    """Warnings about ``config``'s step for a training attack of ``kind``, or for the
    evaluation attack (``kind="eval"``), as one-line messages that name the settings by their
    flags. The command line gives them when it reads the flags and the classifier when it is
    made; the command lines show each text once."""
    if config is None:
        return []
    step, eps = config.step_size, config.eps
    if kind == "fgsm_rs" and step > FGSM_STEP_LIMIT * eps * (1 + 1e-6):
        return [
            f"{FGSM_STEP_WARNING} of {step:.4g} > {FGSM_STEP_LIMIT} * eps ({FGSM_STEP_LIMIT * eps:.4g}) often "
            "overfits catastrophically (Wong et al. 2020): robust accuracy collapses to near 0 within an "
            f"epoch; use a step of {FGSM_STEP_LIMIT} * eps or less"
        ]
    if kind in ("pgd", "free") and step > eps * (1 + 1e-6):
        return [
            f"`step_size={pixels.fraction(step)}` is larger than `eps={pixels.fraction(eps)}`: every PGD "
            "step lands on the ball's surface, so the attack is no stronger than FGSM; the usual step is "
            "eps / 4 (the default)"
        ]
    if kind == "eval" and step > eps * (1 + 1e-6):
        return [
            f"`eval_step_size={pixels.fraction(step)}` is larger than the evaluation eps "
            f"{pixels.fraction(eps)}: validation and test PGD will be weak; the default is eps / 4"
        ]
    return []
