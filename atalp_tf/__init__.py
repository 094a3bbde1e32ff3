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

import importlib
import sys
import types

__version__ = "0.1.0"

# What a user imports, and the module each comes from. Resolved on first use (PEP 562): the
# command lines import this package before parsing their flags, and a mistyped flag should
# not wait ~5 s for TensorFlow. ``load_classifier`` registers every Keras class the package's
# ``.keras`` files name; ``keras.saving.load_model`` needs one of these names used first.
_EXPORTS = {
    "RobustClassifier": "atalp_tf.models.classifier",
    "PGDConfig": "atalp_tf.attacks.pgd",
    "compile_attack": "atalp_tf.attacks.pgd",
    "resnet18": "atalp_tf.models.backbones",
    "keras_resnet": "atalp_tf.models.backbones",
    "CaffePreprocessing": "atalp_tf.models.preprocessing",
    "DataConfig": "atalp_tf.datasets.config",
    "TrainConfig": "atalp_tf.training.config",
    "train": "atalp_tf.training.trainer:run",
    "evaluate": "atalp_tf.evaluation.runner:evaluate",
    "Evaluation": "atalp_tf.evaluation.report",
    "RobustnessEvaluation": "atalp_tf.evaluation.callback",
    "load_classifier": "atalp_tf.runs.loading",
    "export_serving": "atalp_tf.runs.export",
    "UserError": "atalp_tf.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'atalp_tf' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    # ``train`` and ``evaluate`` are also the command-line modules (``python -m
    # atalp_tf.train``); importing one would make Python set it as this package's attribute,
    # hiding the function. Those two names stay the functions.
    def __setattr__(self, name, value):
        if name in ("train", "evaluate") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
