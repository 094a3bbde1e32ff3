"""``RobustnessEvaluation``: the package's evaluation, run during a user's own ``fit``."""

import re

import keras

from atalp_tf.evaluation import runner


class RobustnessEvaluation(keras.callbacks.Callback):
    """Evaluates the model being trained with ``atalp_tf.evaluate`` every ``every`` epochs and
    logs the results like metrics, so ``EarlyStopping``, ``ModelCheckpoint``, ``CSVLogger`` and
    TensorBoard see them: ``{prefix}_clean_accuracy``, ``{prefix}_worst_case`` (one eps; with
    several, ``{prefix}_worst_case_eps{eps x 255}``) and one ``{prefix}_{attack}`` per attack of
    the plan. The last ``Evaluation`` is kept as ``evaluation``, every one in ``evaluations``.

    The attacks are compiled anew at each evaluation: on a few hundred examples with PGD that
    costs seconds, AutoAttack far more, so choose ``every`` and ``num_examples`` to match.

    Args:
        data: ``(images, labels)`` arrays or a ``tf.data.Dataset`` of them (``atalp_tf.evaluate``).
        eps, attacks, steps, num_examples, **options: as ``atalp_tf.evaluate`` takes them; the
            defaults here are a quick check (PGD-10 at 8/255), not a figure to quote.
        every: evaluate after every ``every``-th epoch (and never between).
        prefix: the start of every logged name.
    """

    def __init__(self, data, *, eps=8 / 255, attacks=("pgd",), steps=(10,), every=1, num_examples=None,
                 prefix="robust", **options):
        super().__init__()
        if int(every) != every or every < 1:
            raise ValueError(f"`every` must be a positive integer. Received: every={every!r}")
        self.data = data
        self.every = int(every)
        self.prefix = prefix
        self.options = dict(eps=eps, attacks=tuple(attacks), steps=tuple(steps), num_examples=num_examples,
                            **options)
        self.evaluation = None
        self.evaluations = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        self.evaluation = runner.evaluate(self.model, self.data, **self.options)
        self.evaluations.append((epoch, self.evaluation))
        if logs is None:
            return
        logs[f"{self.prefix}_clean_accuracy"] = self.evaluation.clean_accuracy
        worst = self.evaluation.worst_case
        for eps, accuracy in worst.items():
            suffix = "" if len(worst) == 1 else f"_eps{eps * 255:g}"
            logs[f"{self.prefix}_worst_case{suffix}"] = accuracy
        for name, accuracy in self.evaluation.accuracy.items():
            logs[f"{self.prefix}_{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}"] = accuracy
