"""AutoAttack (Croce & Hein, ICML 2020): the number a robustness claim should quote.

The standard version runs four attacks in turn, each on the examples that every earlier one
left classified correctly, so an example is robust only if all four fail on it:

1. APGD-CE: 100 iterations, cross-entropy;
2. APGD-T: the targeted DLR loss, 100 iterations toward each of 9 target classes;
3. FAB-T: targeted FAB, 100 iterations toward each of 9 target classes;
4. Square: 5,000 score queries.

These are the defaults and the only settings reported as "autoattack": a run with fewer
iterations, targets or queries (the test suites' dry runs) is named as reduced. With fewer
classes than 10 the targets are all the other classes; APGD-T is left out below 4 classes,
where its loss is undefined (AutoAttack's own code needs them too), and ``cut`` says so.

A model whose outputs are random (its logits function wrapped in ``core.EOT``) gets the
reference's ``version='rand'`` instead: APGD-CE and untargeted APGD-DLR, 100 iterations and one
start each, every gradient an expectation over the wrapper's draws (20 by default, the
reference's ``eot_iter``). Where the reference judges each step by one forward pass, here a
point's worth is the share of fresh draws that classify it correctly: each attack runs on the
examples some draw still classifies correctly, and each example keeps the point with the
lowest share found, so the result is the model's expected accuracy, not one draw's verdict.
"""

import numpy as np
import tensorflow as tf

from atalp_tf.attacks import apgd
from atalp_tf.attacks import core
from atalp_tf.attacks import fab
from atalp_tf.attacks import square

STEPS = 100
NUM_TARGETS = 9
QUERIES = 5000
STANDARD = (STEPS, NUM_TARGETS, QUERIES)
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")
RAND_COMPONENTS = ("apgd-ce", "apgd-dlr")


def components(num_classes, randomised=False):
    """The attacks that apply to a model of ``num_classes`` classes, in AutoAttack's order."""
    if randomised:
        return tuple(c for c in RAND_COMPONENTS if c != "apgd-dlr" or num_classes >= 3)
    return tuple(c for c in COMPONENTS if c != "apgd-t" or num_classes >= 4)


def cut_note(num_classes, randomised=False):
    """Why the chain is shorter than the reference's for this model, or None."""
    chain = components(num_classes, randomised)
    missing = [c for c in (RAND_COMPONENTS if randomised else COMPONENTS) if c not in chain]
    if not missing:
        return None
    needs = 3 if randomised else 4
    return (f"{', '.join(missing)} left out: its DLR loss needs at least {needs} classes and this model has "
            f"{num_classes}, so this is not the full chain")


class AutoAttack:
    """Callable ``(images, labels, targets=None) -> (adversarial images, reports)`` at one
    L-inf ``eps``, the evaluation's entry point of this module.

    ``reports["breaker"][i]`` names the attack whose point example i keeps, ``""`` if none
    broke it (or it was misclassified clean); ``reports["after"][name]`` is, per example,
    whether it was still robust after that attack (for a randomised model: the share of
    correct draws). Each component is compiled once and called on the still-robust examples
    only, as AutoAttack does. ``num_classes`` defaults to the model's output width.
    """

    def __init__(
        self, logits_fn, eps, *, num_classes=None, seed=0, steps=STEPS, num_targets=NUM_TARGETS,
        queries=QUERIES, pixel_range=(0.0, 1.0),
    ):
        self.logits_fn = logits_fn
        self.eps = eps
        self.randomised = core.samples_of(logits_fn) > 1
        self.settings = dict(seed=seed, steps=steps, num_targets=num_targets, queries=queries, pixel_range=pixel_range)
        self.score = tf.function(lambda x, y: core.correct_share(logits_fn, x, y), reduce_retracing=True)
        self.attacks = None
        if num_classes is not None:
            self._build(num_classes)

    def _build(self, num_classes):
        s, logits_fn = self.settings, self.logits_fn
        self.names = components(num_classes, self.randomised)
        targets = min(s["num_targets"], num_classes - 1)
        kwargs = dict(eps=self.eps, pixel_range=s["pixel_range"], steps=s["steps"])
        runs = {
            "apgd-ce": lambda x, y: apgd.apgd(logits_fn, x, y, seed=s["seed"], **kwargs),
            "apgd-dlr": lambda x, y: apgd.apgd(
                logits_fn, x, y, loss_fn=lambda z: apgd.dlr(y, z), seed=s["seed"] + 1, **kwargs
            ),
            "apgd-t": lambda x, y: apgd.apgd_targeted(
                logits_fn, x, y, num_targets=targets, seed=s["seed"] + 1, **kwargs
            ),
            "fab-t": lambda x, y: fab.fab_targeted(logits_fn, x, y, num_targets=targets, **kwargs),
            "square": lambda x, y: square.square(
                logits_fn, x, y, eps=self.eps, queries=s["queries"], seed=s["seed"] + 3, pixel_range=s["pixel_range"]
            ),
        }
        self.attacks = [tf.function(runs[name], reduce_retracing=True) for name in self.names]

    def __call__(self, images, labels, targets=None):
        images = tf.convert_to_tensor(images, tf.float32)
        labels = np.asarray(labels, np.int32)
        if self.attacks is None:
            self._build(int(self.logits_fn(images[:1]).shape[-1]))
        adversarial = images.numpy().copy()
        breaker = np.full(len(labels), "", dtype=object)
        # Per example, whether it is robust so far: a bool, or the share of correct draws.
        robust = self.score(images, tf.constant(labels)).numpy()
        after = {}
        for name, attack in zip(self.names, self.attacks):
            todo = np.flatnonzero(robust > 0)
            if len(todo):
                found = attack(tf.gather(images, todo), tf.constant(labels[todo])).numpy()
                share = self.score(found, tf.constant(labels[todo])).numpy()
                broken = share < robust[todo]
                adversarial[todo[broken]] = found[broken]
                breaker[todo[broken]] = name
                robust[todo[broken]] = share[broken]
            after[name] = robust.copy()
        return adversarial, {"breaker": breaker, "after": after}


def cost(budget, num_classes, *, num_targets=NUM_TARGETS, queries=QUERIES, randomised=False):
    """``(gradient passes, forward passes)`` of one call on a batch, at most (each attack runs
    only on the examples the earlier ones left robust): one clean check, each component's own
    passes and one check of what it found."""
    targets = min(num_targets, max(num_classes - 1, 1))
    names = components(num_classes, randomised)
    own = {
        "apgd-ce": apgd.cost(budget, num_classes),
        "apgd-dlr": apgd.cost(budget, num_classes, loss="dlr"),
        "apgd-t": apgd.cost(budget, num_classes, loss="targeted_dlr", num_targets=targets),
        "fab-t": fab.cost(budget, num_classes, num_targets=targets),
        "square": square.cost(queries, num_classes),
    }
    gradients = sum(own[n][0] for n in names)
    forwards = sum(own[n][1] for n in names) + 1 + len(names)
    return gradients, forwards
