"""What a training attack is: the examples ``RobustClassifier`` makes each batch, by kind.

``TrainingAttack`` is the one value a training attack travels as (kind, PGD settings,
replays), and the one place that decides what each kind (``choices.TRAIN_ATTACKS``) means, its
default step, and when a step deserves a warning; ``evaluation`` is the PGD that validates and
tests a training run. Every kind keeps the method's loss; only the examples
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
from atalp_tf.attacks import pgd
from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.attacks.pgd import ascent_direction
from atalp_tf.choices import TRAIN_ATTACKS

# The default step of each kind, as a multiple of eps.
DEFAULT_STEP = {"pgd": 0.25, "fgsm_rs": 1.25, "free": 1.0, "n_fgsm": 1.0}
# The default step of the attack that validates and tests a training run, as a multiple of eps.
EVAL_STEP = 0.25
# N-FGSM's noise: uniform in [-k eps, k eps] (de Jorge et al.'s k = 2).
N_FGSM_NOISE = 2.0
FGSM_STEP_LIMIT = 1.25
FGSM_STEP_WARNING = "FGSM training with a step"


def evaluation(eps, *, step_size=None, steps=20, **settings):
    """The ``PGDConfig`` that validates and tests a training run: PGD with a step of
    ``EVAL_STEP * eps`` unless one is given. ``settings``: norm, random_start, loss."""
    return PGDConfig(eps, step_size or eps * EVAL_STEP, steps, **settings)


def noisy_fgsm(logits_fn, x, loss_fn, config, *, seed=None, noise=N_FGSM_NOISE, pixel_range=(0.0, 1.0)):
    """N-FGSM's examples: ``x`` plus noise uniform in the ``noise * eps`` ball, then one step of
    ``config.step_size`` up ``loss_fn``'s gradient there, clipped to the pixel range only."""
    lo, hi = pixel_range
    x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
    start = tf.clip_by_value(x + core.uniform_in_ball(x, noise * config.eps, config.norm, seed), lo, hi)
    grad = core.input_gradient(logits_fn, start, loss_fn).gradient
    return tf.stop_gradient(tf.clip_by_value(start + config.step_size * ascent_direction(grad, config.norm), lo, hi))


@dataclasses.dataclass(frozen=True)
class TrainingAttack:
    """How training makes its adversarial examples, as one value: the ``kind``
    (``choices.TRAIN_ATTACKS``), its ``config`` (a ``PGDConfig``: eps, step, steps, norm, loss;
    None for a method that trains on clean examples only) and, for ``free``, the ``replays`` of
    each batch. ``make`` gives a kind its defaults; what the kind means to a train step is
    here: ``run_config``, ``updates_per_batch``, ``examples``, ``advice``, ``describe``."""

    kind: str = "pgd"
    config: PGDConfig | None = None
    replays: int = 4

    def __post_init__(self):
        if self.kind not in TRAIN_ATTACKS:
            raise ValueError(f"`attack` must be one of {TRAIN_ATTACKS}. Received: attack={self.kind!r}")
        if int(self.replays) != self.replays or self.replays < 1:
            raise ValueError(f"`free_replays` must be a positive integer. Received: free_replays={self.replays}")
        object.__setattr__(self, "config", PGDConfig.coerce(self.config, "train_attack"))
        object.__setattr__(self, "replays", int(self.replays))

    @classmethod
    def make(cls, kind, eps, *, step_size=None, steps=7, replays=4, **settings):
        """A ``kind`` of attack at ``eps`` with its defaults: the kind's step unless one is given
        (``DEFAULT_STEP``), one step for the single-step kinds. ``settings``: norm,
        random_start, loss."""
        step_size = step_size or eps * DEFAULT_STEP[kind]
        return cls(kind, PGDConfig(eps, step_size, steps if kind == "pgd" else 1, **settings), replays)

    @property
    def single_step(self):
        """One attack step per batch (FGSM-RS, free, N-FGSM): the kinds that can overfit
        catastrophically."""
        return self.kind != "pgd"

    @property
    def updates_per_batch(self):
        """Optimizer steps per batch: the replays for free training, otherwise 1."""
        return self.replays if self.kind == "free" else 1

    def run_config(self, config=None):
        """What the train step runs for ``config`` (default this attack's): FGSM-RS is always one
        step from a random start."""
        config = config or self.config
        if self.kind == "fgsm_rs":
            return dataclasses.replace(config, steps=1, random_start=True)
        return config

    def examples(self, logits_fn, images, loss_fn, *, config=None, seed=None, start=None):
        """The batch's adversarial examples up ``loss_fn`` (of the logits), at ``config``
        (default this attack's) as this kind runs it; ``start``: PGD's starting point instead of
        its random one. Free training makes its own in the train step, a replay at a time."""
        config = self.run_config(config)
        if self.kind == "n_fgsm":
            return noisy_fgsm(logits_fn, images, loss_fn, config, seed=seed)
        return pgd.pgd(logits_fn, images, loss_fn, config, seed=seed, start=start)

    def describe(self):
        """``PGD-7``, ``FGSM-RS``, ``free (4 replays)`` or ``N-FGSM``."""
        return {"pgd": f"PGD-{self.config.steps}", "fgsm_rs": "FGSM-RS", "free": f"free ({self.replays} replays)",
                "n_fgsm": "N-FGSM"}[self.kind]

    def advice(self):
        """Warnings about this attack's step, as one-line messages that name the settings by
        their flags. The command line gives them when it reads the flags and the classifier when
        it is made; the command lines show each text once."""
        return advice(self.kind, self.config)


def advice(kind, config):
    """Warnings about ``config``'s step for a training attack of ``kind`` (``TrainingAttack.advice``),
    or for the evaluation attack (``kind="eval"``)."""
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
