"""atalp_tf: adversarial training with attention and logit pairing (Li et al. 2022), Keras 3.

The packages, from the bottom up (each imports only those before it):

* ``choices``, ``errors``, ``pixels``: allowed values, the errors a user can cause, eps units;
* ``atomic``, ``losses``, ``optimizers``, ``plots``: files written whole or not at all,
  per-example losses, optimizers and schedules, figures;
* ``attacks``: PGD (the one core training and evaluation share), APGD, FAB, Square, RayS and
  the standard AutoAttack;
* ``models``: ResNet backbones, in-model preprocessing, the training objectives and
  ``RobustClassifier``;
* ``datasets``: the sources, splits and tf.data pipelines;
* ``runs``: what a run leaves on disk and how every command reads it: the run directory and its
  manifest, the lock, checked loading, the serving export;
* ``training``: the configuration, the run in stages, its resumable state and callbacks;
* ``evaluation``: attack plans with the per-example worst case, false-robustness checks and
  reports; ``inspection``: attention maps, part activation, loss landscapes and their files;
* ``reproduction``: the paper's tables as suites, and their runner;
* ``train``, ``evaluate``, ``visualize``, ``reproduce`` (with ``cli``): the command lines,
  flags and one call each.
"""

import sys

__version__ = "0.1.0"

# `python -m atalp_tf.<command>` imports this package before the command parses its flags, and
# Python sets argv[0] to "-m" while it does. Importing TensorFlow then would make a mistyped
# flag wait ~5 s for its message, so the commands import what they need after validation.
# Every other `import atalp_tf` loads the Keras classes at once: that registers them, and
# `.keras` files that name them load with no further code.
if sys.argv[:1] != ["-m"]:
    from atalp_tf.attacks import PGDConfig  # noqa: F401
    from atalp_tf.models.classifier import RobustClassifier  # noqa: F401
    from atalp_tf.models.preprocessing import CaffePreprocessing  # noqa: F401
    from atalp_tf import optimizers  # noqa: F401  (registers the OneCycle schedule)
