"""Running an evaluation: robust accuracy under a plan of attacks, per example, with the worst
case over the attacks (``evaluate``), and the model as the attacks see it (``logits_of``).

An example counts as robust under an attack only if the model classifies it correctly both
clean and attacked; with restarts, only if every restart fails. The worst case at an eps is
robust only if every attack at that eps, gray-box and black-box, failed on it: the accuracy a
user can rely on is that one, not any single attack's.

Gray-box attacks are made on the evaluated model itself; black-box (transfer) attacks are made
on a separate source model and then given to the evaluated one. Every attack is compiled once
per spec with ``tf.function`` and seeded, so a seed gives the same report on every run.

A model whose outputs differ between two identical calls is randomised: unless told otherwise
the evaluation attacks it through ``core.EOT`` with ``core.DEFAULT_EOT_SAMPLES`` draws (every
gradient the mean over the draws, AutoAttack's randomised version) and scores every point by
the share of fresh draws that classify it correctly, so each figure is an expected accuracy
and carries the draws' standard error. A model that outputs probabilities is attacked through
the logits before its softmax (``logits_of``).

Besides the plan, the evaluation takes measurements the checks in
``atalp_tf.evaluation.checks`` need: the share of inputs with an all-zero input gradient,
whether the outputs look like probabilities, whether two identical calls disagree, and accuracy
under an unbounded PGD (eps covering the whole pixel range), which must be near zero.
"""

import dataclasses
import itertools
import time

import keras
import numpy as np
import tensorflow as tf

from atalp_tf import losses
from atalp_tf.attacks import autoattack
from atalp_tf.attacks import core
from atalp_tf.attacks import pgd
from atalp_tf.errors import DataError
from atalp_tf.errors import UserError
from atalp_tf.evaluation.outcomes import Report
from atalp_tf.evaluation.plan import estimate_seconds
from atalp_tf.models.backbones import walk_layers

# Two identical calls whose outputs differ by more than this share of the largest output mean
# a randomised model.
REPEAT_CHANGE = 1e-4


def straight_through(model, layer_names):
    """Makes the gradient attacks differentiate ``layer_names`` as the identity (BPDA).

    Athalye et al.'s Backward Pass Differentiable Approximation for input transformations
    whose gradient is zero or useless (rounding, quantisation, JPEG): the forward pass is
    unchanged, ``g(x)``, while the backward pass treats the layer as ``x``. Each named layer,
    found anywhere in ``model`` (nested models included), must return its input's shape.
    Changes ``model`` in place, for the evaluation that loaded it.
    """
    for name in layer_names:
        layer = next((layer for layer in walk_layers(model) if layer.name == name), None)
        if layer is None:
            raise UserError(
                f"`bpda={name}`: the model has no layer of that name; its layers are "
                f"{', '.join(layer.name for layer in walk_layers(model))}"
            )
        forward = layer.call

        def call(inputs, *args, _forward=forward, _name=name, **kwargs):
            outputs = _forward(inputs, *args, **kwargs)
            if outputs.shape != inputs.shape:
                raise ValueError(
                    f"BPDA replaces layer {_name!r} by the identity in the backward pass, so it must "
                    f"keep its input's shape; it maps {inputs.shape} to {outputs.shape}"
                )
            inputs = tf.cast(inputs, outputs.dtype)
            return inputs + tf.stop_gradient(outputs - inputs)

        layer.call = call
    return model


def _pre_softmax(outputs):
    """The tensor a softmax was applied to, if ``outputs`` came straight out of one (Keras marks
    its softmax outputs; a bare ``tf.nn.softmax`` is its op's input), else None."""
    logits = getattr(outputs, "_keras_logits", None)
    if logits is None:
        try:
            if outputs.op.type == "Softmax":
                logits = outputs.op.inputs[0]
        except AttributeError:  # an eager tensor has no op
            pass
    return logits


class ModelLogits:
    """The model's logits in float32, in inference mode (batch norm frozen): what every attack
    calls as its ``logits_fn``.

    A model that ends in a softmax is attacked through the logits before it; outputs that are
    probabilities from elsewhere (every row in [0, 1], summing to 1) through their logarithm,
    which equals the logits up to a constant per example, so cross-entropy, margins, DLR and
    the predicted class are unchanged. Taking the loss on probabilities instead would apply a
    second softmax, and Keras' cross-entropy would quietly differentiate the pre-softmax tensor
    that the attacks' tape never saw: a gradient of exactly zero. ``outputs`` is the model's
    own output; ``recovered`` says, once traced, whether a pre-softmax tensor was found.
    """

    def __init__(self, model):
        self.model = model
        self.recovered = None

    def outputs(self, images):
        return self.model(images, training=False)

    def __call__(self, images):
        outputs = self.outputs(images)
        logits = _pre_softmax(outputs)
        self.recovered = logits is not None
        if logits is not None:
            return tf.cast(logits, tf.float32)
        outputs = tf.cast(outputs, tf.float32)
        if outputs.shape.rank != 2:
            return outputs
        probabilities = tf.reduce_all(outputs >= 0) & tf.reduce_all(outputs <= 1) & tf.reduce_all(
            tf.abs(tf.reduce_sum(outputs, axis=-1) - 1) < 1e-3
        )
        return tf.where(probabilities, tf.math.log(tf.maximum(outputs, 1e-38)), outputs)


def logits_of(model):
    """``ModelLogits(model)``: the model's float32 logits in inference mode, through a final softmax."""
    return ModelLogits(model)


def _probability_rows(outputs):
    """Per row of a ``[B, K]`` array of outputs, whether it is a probability vector."""
    in_unit = (outputs >= 0).all(axis=1) & (outputs <= 1).all(axis=1)
    return in_unit & (np.abs(outputs.sum(axis=1) - 1) < 1e-3)


def _outputs_of(target):
    """The model's own outputs (probabilities, if it ends in a softmax) of a logits function."""
    target = core.one_draw(target)
    return target.outputs if isinstance(target, ModelLogits) else target


def prepare(spec, logits_fn, seed):
    """``(images, labels, targets) -> (adversarial images, reports)`` for ``spec``, made once:
    the attack module's ``run`` compiled with ``tf.function`` and seeded by a generator of its
    own, or AutoAttack's chain (Python between its compiled components)."""
    if spec.attack == "autoattack":
        return autoattack.AutoAttack(
            logits_fn, spec.eps, seed=seed, steps=spec.steps, num_targets=spec.num_targets, queries=spec.queries,
        )
    row, options = spec.row, spec.options()
    seed_generator = keras.random.SeedGenerator(seed)

    def run(images, labels, targets):
        return row.module.run(
            logits_fn, images, labels, eps=spec.eps, budget=spec.steps, seed=seed_generator,
            **(dict(options, targets=targets) if row.targeted else options),
        )

    return tf.function(run, reduce_retracing=True)


def _random_targets(labels, num_classes, rng):
    """A uniformly drawn wrong class per example (Engstrom et al.'s targeted PGD)."""
    offsets = rng.integers(1, max(num_classes, 2), size=len(labels))
    return ((labels + offsets) % num_classes).astype(np.int32)


def output_change(target, images):
    """``(largest change between two identical calls, largest absolute output)``, one draw each
    (eager: two calls on a few images cost less than compiling the model once more)."""
    forward = core.one_draw(target)
    first, second = np.asarray(forward(images)), np.asarray(forward(images))
    return float(np.abs(first - second).max()), float(np.abs(first).max())


def is_randomised(target, images):
    """Whether two identical calls of ``target`` on ``images`` disagree beyond float noise."""
    change, largest = output_change(target, images)
    return change > REPEAT_CHANGE * max(largest, 1.0)


class _Probes:
    """Accumulates the measurements the false-robustness checks read. They take one draw of a
    randomised model: they look for broken gradients and outputs, not for its accuracy."""

    def __init__(self, target, steps):
        one_draw = core.one_draw(target)
        self.target = target
        self.zero_gradient = 0
        self.seen = 0
        self.probability_rows = 0
        self.largest_probability = 0.0
        self.largest_repeat_change = 0.0
        self.largest_logit = 0.0
        self.unbounded_robust = 0
        unbounded = pgd.PGDConfig(1.0, 2.5 / steps, steps, random_start=False)
        self.unbounded = pgd.compile_attack(one_draw, unbounded)
        self.predict = tf.function(
            lambda x: tf.argmax(one_draw(x), axis=-1, output_type=tf.int32), reduce_retracing=True
        )
        outputs = _outputs_of(target)

        @tf.function(reduce_retracing=True)
        def gradients(images, labels):
            # The gradient the attacks follow, so a zero here is a zero for them too.
            _, logits, grad, _ = core.input_gradient(
                one_draw, images, lambda logits: losses.cross_entropy(labels, logits)
            )
            return logits, one_draw(images), grad, tf.cast(outputs(images), tf.float32)

        self.gradients = gradients

    def add(self, images, labels):
        logits, again, grad, raw = (t.numpy() for t in self.gradients(images, labels))
        self.seen += len(labels)
        self.zero_gradient += int(np.sum(np.all(grad.reshape(len(grad), -1) == 0, axis=1)))
        rows = _probability_rows(raw)
        self.probability_rows += int(np.sum(rows))
        if rows.any():
            self.largest_probability = max(self.largest_probability, float(raw[rows].max()))
        self.largest_repeat_change = max(self.largest_repeat_change, float(np.abs(logits - again).max()))
        self.largest_logit = max(self.largest_logit, float(np.abs(logits).max()))
        adversarial = self.unbounded(images, labels)
        self.unbounded_robust += int(np.sum(self.predict(adversarial).numpy() == labels))

    def result(self):
        one_draw = core.one_draw(self.target)
        recovered = getattr(one_draw, "recovered", None)
        return {
            "zero_gradient_share": self.zero_gradient / self.seen,
            "probability_rows_share": self.probability_rows / self.seen,
            "largest_probability": self.largest_probability,
            "softmax_logits_recovered": recovered,
            "repeat_call_max_change": self.largest_repeat_change,
            "largest_abs_output": self.largest_logit,
            "unbounded_pgd_accuracy": self.unbounded_robust / self.seen,
            "eot_samples": core.samples_of(self.target),
        }


def _eot_samples(target, images, eot_samples, log):
    """How many draws the evaluation averages: ``eot_samples`` if given, else
    ``core.DEFAULT_EOT_SAMPLES`` for a model whose outputs are random and 1 for one that is not."""
    if eot_samples is not None:
        return eot_samples
    if not is_randomised(target, images):
        return 1
    log(f"The model's outputs differ between two identical calls: it is randomised, so every attack "
        f"averages its gradients and scores over {core.DEFAULT_EOT_SAMPLES} draws (EOT) and each accuracy "
        "is the expected accuracy over the draws (eot_samples sets another count)")
    return core.DEFAULT_EOT_SAMPLES


def _describe_outputs(target, images, log):
    """One line when the model outputs probabilities: what the attacks take instead."""
    if not isinstance(core.one_draw(target), ModelLogits):
        return
    raw = np.asarray(_outputs_of(target)(images[:8]))
    if raw.ndim != 2 or not _probability_rows(raw).all():
        return
    logits_fn = core.one_draw(target)
    logits_fn(images[:1])  # so ModelLogits knows what it found
    if logits_fn.recovered:
        log("The model outputs probabilities (it ends in a softmax): the attacks use the logits before it")
    else:
        log("The model outputs probabilities: the attacks use their logarithm, the logits up to a constant "
            "per example")


def _concatenate(parts):
    """Per-batch structures (dicts of arrays) joined along the examples."""
    return tf.nest.map_structure(lambda *arrays: np.concatenate([np.asarray(a) for a in arrays]), *parts)


def evaluate(target, batches, specs, *, source=None, seed=0, num_classes=None, log=None, num_batches=None,
             eot_samples=None):
    """Runs ``specs`` on every batch and returns a ``Report``.

    Args:
        target: logits function of the evaluated model (``logits_of(model)``).
        batches: iterable of ``(images, labels)``, pixels in [0, 1].
        specs: ``AttackSpec`` list (``plan.plan``); transfer specs need ``source``.
        source: logits function of the black-box source model.
        num_classes: classes of the target (read from its output when None).
        log: optional callable of a line: what the model's outputs are, an estimate of the
            whole before the first batch (with ``num_batches``), each attack's accuracy and
            time on the first batch, and a line per later batch.
        num_batches: how many batches ``batches`` holds, for the estimate.
        eot_samples: draws to average over (EOT); None: ``core.DEFAULT_EOT_SAMPLES`` if the
            target's outputs are random, else 1; 1 turns EOT off.
    """
    if any(s.transfer for s in specs) and source is None:
        raise ValueError("The plan has black-box (transfer) attacks but no source model was given")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"The plan names an attack twice: {sorted(n for n in names if names.count(n) > 1)}")
    log = log or (lambda line: None)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise DataError("No examples to evaluate: the dataset is empty")
    first_images = tf.convert_to_tensor(first[0], tf.float32)
    _describe_outputs(target, first_images, log)
    samples = _eot_samples(target, first_images[:8], eot_samples, log)
    if samples > 1:
        target = core.EOT(target, samples)
        specs = [s if s.transfer else dataclasses.replace(s, eot_samples=samples) for s in specs]
        names = [s.name for s in specs]
    score = tf.function(lambda x, y: core.correct_share(target, x, y), reduce_retracing=True)
    longest = max([s.steps for s in specs if s.attack in ("pgd", "apgd_ce")] or [20])
    probes = _Probes(target, min(max(longest, 20), 100))
    prepared = {
        s.name: prepare(s, source if s.transfer else target, seed + i) for i, s in enumerate(specs)
    }
    rng = np.random.default_rng(seed)
    labels_all, clean_all, robust = [], [], {n: [] for n in names}
    details = {}
    started = time.time()
    for index, (images, labels) in enumerate(itertools.chain([first], batches)):
        images = tf.convert_to_tensor(images, tf.float32)
        labels = np.asarray(labels, np.int32)
        labels_t = tf.constant(labels)
        if num_classes is None:
            num_classes = int(target(images[:1]).shape[-1])
        if index == 0 and num_batches:
            estimate = estimate_seconds(specs, target, images, labels_t, num_batches, num_classes, source)
            log(f"{len(specs)} attacks on {num_batches} batch(es) of up to {len(labels)} examples: about "
                f"{_duration(estimate)} (an upper bound for RayS and AutoAttack, which stop on broken "
                "examples; plus compilation)")
        clean = score(images, labels_t).numpy()
        targets = tf.constant(_random_targets(labels, num_classes, rng))
        for spec in specs:
            ok = clean.copy()
            attack_started = time.time()
            for _ in range(spec.restarts):
                adversarial, reports = prepared[spec.name](images, labels_t, targets)
                ok = np.minimum(ok, score(adversarial, labels_t).numpy())
            robust[spec.name].append(ok)
            if reports:
                details.setdefault(spec.name, []).append(tf.nest.map_structure(np.asarray, reports))
            if index == 0:
                log(f"  {spec.name:<44} {ok.mean():.4f} on the first batch ({_duration(time.time() - attack_started)})")
        probes.add(images, labels_t)
        labels_all.append(labels)
        clean_all.append(clean)
        elapsed = time.time() - started
        if num_batches and index + 1 < num_batches:
            left = elapsed / (index + 1) * (num_batches - index - 1)
            log(f"batch {index + 1}/{num_batches} done, {_duration(elapsed)} so far, about {_duration(left)} left")
    notes = {
        spec.name: note for spec in specs if spec.attack == "autoattack"
        and (note := autoattack.cut_note(num_classes, spec.eot_samples > 1))
    }
    return Report(
        specs=list(specs),
        labels=np.concatenate(labels_all),
        clean_correct=np.concatenate(clean_all),
        robust={n: np.concatenate(v) for n, v in robust.items()},
        probes=probes.result(),
        num_classes=num_classes,
        details={name: _concatenate(parts) for name, parts in details.items()},
        notes=notes,
        eot_samples=samples,
    )


def _duration(seconds):
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.1f} min"
