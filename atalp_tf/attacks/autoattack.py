"""Standard AutoAttack (Croce & Hein, ICML 2020): the number a robustness claim should quote.

Four attacks in turn, each on the examples that every earlier one left classified correctly,
so an example is robust only if all four fail on it:

1. APGD-CE: 100 iterations, cross-entropy;
2. APGD-T: the targeted DLR loss, 100 iterations toward each of 9 target classes;
3. FAB-T: targeted FAB, 100 iterations toward each of 9 target classes;
4. Square: 5,000 score queries.

These are the defaults and the only settings reported as "autoattack": a run with fewer
iterations, targets or queries (the test suites' dry runs) is named as reduced. With fewer classes than 10 the targets are all the other classes; APGD-T is
left out below 4 classes, where its loss is undefined (AutoAttack's own code needs them too).
"""

import numpy as np
import tensorflow as tf

from atalp_tf.attacks import apgd
from atalp_tf.attacks import fab
from atalp_tf.attacks import square

STEPS = 100
NUM_TARGETS = 9
QUERIES = 5000
STANDARD = (STEPS, NUM_TARGETS, QUERIES)
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")


def components(num_classes):
    """The attacks that apply to a model of ``num_classes`` classes, in AutoAttack's order."""
    return tuple(c for c in COMPONENTS if c != "apgd-t" or num_classes >= 4)


class AutoAttack:
    """Callable ``(images, labels) -> (adversarial images, breaker)`` at one L-inf ``eps``.

    ``breaker[i]`` names the attack that first misclassified example i, or is ``""`` if none
    did (or it was misclassified clean). Each component is compiled
    once and called on the still-robust examples only, as AutoAttack does.
    """

    def __init__(
        self, logits_fn, eps, *, num_classes, seed=0, steps=STEPS, num_targets=NUM_TARGETS,
        queries=QUERIES, pixel_range=(0.0, 1.0),
    ):
        self.logits_fn = logits_fn
        self.eps = eps
        self.names = components(num_classes)
        targets = min(num_targets, num_classes - 1)
        kwargs = dict(eps=eps, pixel_range=pixel_range)
        runs = {
            "apgd-ce": lambda x, y: apgd.apgd(logits_fn, x, y, steps=steps, seed=seed, **kwargs),
            "apgd-t": lambda x, y: apgd.apgd_targeted(
                logits_fn, x, y, steps=steps, num_targets=targets, seed=seed + 1, **kwargs
            ),
            "fab-t": lambda x, y: fab.fab_targeted(logits_fn, x, y, steps=steps, num_targets=targets, **kwargs),
            "square": lambda x, y: square.square(logits_fn, x, y, queries=queries, seed=seed + 3, **kwargs),
        }
        self.attacks = [tf.function(runs[name], reduce_retracing=True) for name in self.names]
        self.predict = tf.function(
            lambda x: tf.argmax(logits_fn(x), axis=-1, output_type=tf.int32), reduce_retracing=True
        )

    def __call__(self, images, labels):
        images = tf.convert_to_tensor(images, tf.float32)
        labels = np.asarray(labels, np.int32)
        adversarial = images.numpy().copy()
        breaker = np.full(len(labels), "", dtype=object)
        robust = self.predict(images).numpy() == labels
        for name, attack in zip(self.names, self.attacks):
            todo = np.flatnonzero(robust)
            if not len(todo):
                break
            found = attack(tf.gather(images, todo), tf.constant(labels[todo])).numpy()
            broken = self.predict(found).numpy() != labels[todo]
            adversarial[todo[broken]] = found[broken]
            breaker[todo[broken]] = name
            robust[todo[broken]] = False
        return adversarial, breaker
