"""Attacks on image classifiers that take pixels in [0, 1] and return logits.

* ``pgd``: the one attack core: ``PGDConfig``, float32 input gradients whatever the dtype
  policy, random starts (per replica), projection, the step every PGD-like update shares, PGD
  itself, and ``compile_attack``. Training and evaluation use the same code.
* ``training``: what a training attack of each kind (PGD, FGSM-RS, free) means.
* ``apgd``, ``fab``, ``square``, ``rays``: APGD-CE / APGD-T, FAB-T, Square and RayS, each
  checked against its reference implementation's accounting;
* ``autoattack``: the standard AutoAttack over them.

The names below are the PGD API; the other attacks are used through their modules.
"""

from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.attacks.pgd import attack
from atalp_tf.attacks.pgd import compile_attack
from atalp_tf.attacks.pgd import gaussian_start
from atalp_tf.attacks.pgd import input_gradient
from atalp_tf.attacks.pgd import random_start

__all__ = ["PGDConfig", "attack", "compile_attack", "gaussian_start", "input_gradient", "random_start"]
