"""Attacks on image classifiers that take pixels in [0, 1] and return logits.

* ``core``: what every attack shares: float32 input gradients whatever the dtype policy,
  seeds (per replica), projection, scoring, and ``EOT``, the wrapper that turns every gradient,
  score and query into its expectation over a randomised model's draws.
* ``pgd``: ``PGDConfig``, random starts, the step every PGD-like update shares, PGD itself and
  ``compile_attack``. Training and evaluation use the same code.
* ``training_attack``: ``TrainingAttack``, what a training attack of each kind (PGD, FGSM-RS,
  free, N-FGSM) means, and the PGD that tests a training run.
* ``apgd``, ``fab``, ``square``, ``rays``: APGD-CE / APGD-T, FAB-T, Square and RayS, each
  checked against its reference implementation's accounting;
* ``autoattack``: the standard AutoAttack over them, and its randomised version.

Every module but ``core`` has the evaluation's entry point ``run(logits_fn, x, labels, *, eps,
budget, seed, ...) -> (x_adv, reports)`` and its ``cost`` in passes. The names below are the
PGD API and EOT; the other attacks are used through their modules.
"""

from atalp_tf.attacks.core import EOT
from atalp_tf.attacks.core import input_gradient
from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.attacks.pgd import attack
from atalp_tf.attacks.pgd import compile_attack
from atalp_tf.attacks.pgd import gaussian_start
from atalp_tf.attacks.pgd import random_start

__all__ = ["EOT", "PGDConfig", "attack", "compile_attack", "gaussian_start", "input_gradient", "random_start"]
