"""Robust accuracy under a plan of attacks, per example, with the worst case over the attacks.

An example counts as robust under an attack only if the model classifies it correctly both
clean and attacked; with restarts, only if every restart fails. The worst case at an eps is
robust only if every attack at that eps, gray-box and black-box, failed on it: the accuracy a
user can rely on is that one, not any single attack's.

Gray-box attacks are made on the evaluated model itself; black-box (transfer) attacks are made
on a separate source model and then given to the evaluated one. Every attack is compiled once
per spec with ``tf.function`` and seeded, so a seed gives the same report on every run.

Besides the plan, the evaluation takes measurements the checks in
``atalp_tf.evaluation.checks`` need: the share of inputs with an all-zero input gradient,
whether the outputs look like probabilities, whether two identical calls disagree, and accuracy
under an unbounded PGD (eps covering the whole pixel range), which must be near zero.
"""

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from atalp_tf import losses
from atalp_tf import pixels
from atalp_tf.attacks import apgd
from atalp_tf.attacks import autoattack
from atalp_tf.attacks import fab
from atalp_tf.attacks import pgd
from atalp_tf.attacks import rays
from atalp_tf.attacks import square
from atalp_tf.choices import ATTACKS
from atalp_tf.choices import DEFAULT_ATTACKS
from atalp_tf.choices import GRADIENT_FREE_ATTACKS
from atalp_tf.errors import DataError
from atalp_tf.errors import UserError
from atalp_tf.models.backbones import walk_layers



@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One attack of the plan.

    Args:
        attack: one of ``ATTACKS``.
        eps: L-inf radius in [0, 1] pixel units.
        steps: iterations (PGD, APGD, FAB, AutoAttack's APGD and FAB), or queries (Square,
            RayS); 1 for FGSM.
        restarts: independent runs; an example is robust only if all fail.
        step_size: PGD's step; None for ``2.5 * eps / steps`` (Madry et al.).
        transfer: made on the source model and given to the target (black-box).
        num_targets: target classes tried by APGD-T and FAB-T.
        queries: AutoAttack's Square queries.

    AutoAttack's standard settings are 100 iterations, 9 targets and 5,000 queries
    (``atalp_tf.attacks.autoattack``); any other budget is named as reduced, never "autoattack".
    """

    attack: str
    eps: float
    steps: int = 1
    restarts: int = 1
    step_size: float | None = None
    transfer: bool = False
    num_targets: int = 9
    queries: int = autoattack.QUERIES

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ValueError(f"`attack` must be one of {ATTACKS}. Received: attack={self.attack!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"`eps` must be in (0, 1] (pixel units). Received: eps={self.eps}")
        if self.steps < 1 or self.restarts < 1:
            raise ValueError(
                f"`steps` and `restarts` must be >= 1. Received: steps={self.steps}, "
                f"restarts={self.restarts}"
            )

        if self.attack == "autoattack" and (self.restarts, self.transfer) != (1, False):
            raise ValueError(
                "AutoAttack runs once, on the model itself. "
                f"Received: restarts={self.restarts}, transfer={self.transfer}"
            )

    @property
    def standard_autoattack(self):
        return (self.steps, self.num_targets, self.queries) == autoattack.STANDARD

    @property
    def pgd_step_size(self):
        return self.step_size or 2.5 * self.eps / self.steps

    @property
    def box(self):
        return "black" if self.transfer else "gray"

    @property
    def name(self):
        if self.attack == "fgsm" or (self.attack == "autoattack" and self.standard_autoattack):
            label = self.attack
        elif self.attack == "autoattack":
            label = f"autoattack-reduced-{self.steps}it-{self.num_targets}t-{self.queries}q"
        elif self.attack in GRADIENT_FREE_ATTACKS:
            label = f"{self.attack}-{self.steps}q"
        else:
            label = f"{self.attack}-{self.steps}"
        if self.restarts > 1:
            label += f"x{self.restarts}"
        if self.transfer:
            label = "transfer " + label
        return f"{label} eps={pixels.fraction(self.eps)}"

    def to_dict(self):
        values = dataclasses.asdict(self)
        if self.attack != "autoattack":
            del values["queries"]
        values.update(name=self.name, box=self.box, eps_255=self.eps * 255)
        if self.attack in ("pgd", "pgd_targeted"):
            values["step_size"] = self.pgd_step_size
        return values


def plan(
    eps_values,
    steps_values,
    attack_names=DEFAULT_ATTACKS,
    *,
    restarts=1,
    step_size=None,
    queries=1000,
    num_targets=9,
    transfer=False,
    num_classes=None,
    autoattack_budget=autoattack.STANDARD,
):
    """The attacks to run for each eps: FGSM; PGD at each iteration count; targeted PGD, APGD-CE,
    APGD-T and FAB-T at the largest count; Square and RayS with ``queries``; the standard
    AutoAttack (``autoattack_budget``: iterations, targets, Square queries; the standard ones
    unless a dry run reduces them); and, with ``transfer``, FGSM and PGD at each count again,
    made on the source model.

    APGD-T is left out for fewer than 4 classes (its loss needs them).
    """
    longest = max(steps_values)
    specs = []
    for eps in eps_values:
        for name in attack_names:
            if name == "fgsm":
                specs.append(AttackSpec("fgsm", eps))
            elif name == "pgd":
                specs += [AttackSpec("pgd", eps, s, restarts, step_size) for s in steps_values]
            elif name in ("pgd_targeted", "apgd_ce"):
                specs.append(AttackSpec(name, eps, longest, restarts, step_size))
            elif name == "apgd_t" and (num_classes is None or num_classes >= 4):
                specs.append(AttackSpec(name, eps, longest, 1, num_targets=num_targets))
            elif name == "fab_t":
                specs.append(AttackSpec(name, eps, longest, 1, num_targets=num_targets))
            elif name == "autoattack":
                steps, targets, aa_queries = autoattack_budget
                specs.append(AttackSpec(name, eps, steps, num_targets=targets, queries=aa_queries))
            elif name in GRADIENT_FREE_ATTACKS:
                specs.append(AttackSpec(name, eps, queries, 1))
        if transfer:
            specs.append(AttackSpec("fgsm", eps, transfer=True))
            specs += [
                AttackSpec("pgd", eps, s, restarts, step_size, transfer=True) for s in steps_values
            ]
    return specs


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
                f"--bpda={name}: the model has no layer of that name; its layers are "
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


def logits_of(model):
    """The model's logits in float32, in inference mode (batch norm frozen)."""
    return lambda images: tf.cast(model(images, training=False), tf.float32)


class _AutoAttackRun:
    """The ``compile_spec`` runner of AutoAttack: Python between compiled components, because
    each component runs on the examples the earlier ones left robust. ``breakers`` collects,
    per call, the component that broke each example (``""`` for none)."""

    def __init__(self, spec, logits_fn, seed):
        self.spec, self.logits_fn, self.seed = spec, logits_fn, seed
        self.attack = None
        self.breakers = []

    def __call__(self, images, labels, targets, restart):
        if self.attack is None:
            classes = int(self.logits_fn(images[:1]).shape[-1])
            spec = self.spec
            self.attack = autoattack.AutoAttack(
                self.logits_fn, spec.eps, num_classes=classes, seed=self.seed,
                steps=spec.steps, num_targets=spec.num_targets, queries=spec.queries,
            )
        adversarial, breaker = self.attack(images, labels)
        self.breakers.append(breaker)
        return adversarial


def compile_spec(spec, logits_fn, seed):
    """``(images, labels, targets, restart) -> adversarial images`` for ``spec``, compiled once."""
    if spec.attack == "autoattack":
        return _AutoAttackRun(spec, logits_fn, seed)
    seed_generator = keras.random.SeedGenerator(seed)
    if spec.attack == "fgsm":
        config = pgd.PGDConfig.fgsm(spec.eps)
    elif spec.attack in ("pgd", "pgd_targeted"):
        config = pgd.PGDConfig(
            spec.eps, spec.pgd_step_size, spec.steps, targeted=spec.attack == "pgd_targeted"
        )

    def run(images, labels, targets, restart):
        if spec.attack in ("fgsm", "pgd"):
            return pgd.attack(logits_fn, images, labels, config, seed=seed_generator)
        if spec.attack == "pgd_targeted":
            return pgd.attack(logits_fn, images, targets, config, seed=seed_generator)
        if spec.attack == "apgd_ce":
            return apgd.apgd(logits_fn, images, labels, eps=spec.eps, steps=spec.steps, seed=seed_generator)
        if spec.attack == "apgd_t":
            return apgd.apgd_targeted(
                logits_fn, images, labels, eps=spec.eps, steps=spec.steps,
                num_targets=spec.num_targets, seed=seed_generator,
            )
        if spec.attack == "fab_t":
            return fab.fab_targeted(
                logits_fn, images, labels, eps=spec.eps, steps=spec.steps, num_targets=spec.num_targets
            )
        if spec.attack == "square":
            return square.square(logits_fn, images, labels, eps=spec.eps, queries=spec.steps, seed=seed + restart)
        return rays.rays(logits_fn, images, labels, eps=spec.eps, queries=spec.steps)[0]

    return tf.function(run, reduce_retracing=True)


@dataclasses.dataclass
class Report:
    """Per-example outcomes of an evaluation; ``robust[name]`` is a boolean array per attack."""

    specs: list
    labels: np.ndarray
    clean_correct: np.ndarray
    robust: dict
    probes: dict
    num_classes: int
    # For AutoAttack specs: per example, the component that broke it ("" for none).
    breakers: dict = dataclasses.field(default_factory=dict)

    @property
    def num_examples(self):
        return len(self.labels)

    @property
    def clean_accuracy(self):
        return float(np.mean(self.clean_correct))

    def accuracy(self, spec):
        return float(np.mean(self.robust[spec.name]))

    def worst_case(self):
        """``{eps: (accuracy, names of the attacks at eps)}``, robust only if every attack failed."""
        result = {}
        for eps in sorted({s.eps for s in self.specs}):
            names = [s.name for s in self.specs if s.eps == eps]
            robust = np.logical_and.reduce([self.robust[n] for n in names])
            result[eps] = (float(np.mean(robust)), names)
        return result

    def after_each_component(self, spec):
        """AutoAttack's running robust accuracy: ``{component: accuracy after it}``."""
        breaker = self.breakers[spec.name]
        robust = self.clean_correct.copy()
        result = {}
        for name in autoattack.components(self.num_classes):
            robust &= breaker != name
            result[name] = float(np.mean(robust))
        return result

    def examples(self):
        """Per example: its label, whether it was right clean, and at each eps whether it
        survived every attack and which attacks broke it (an AutoAttack row says which of its
        components did)."""
        rows = []
        eps_values = sorted({s.eps for s in self.specs})
        for i, label in enumerate(self.labels):
            row = {"index": i, "label": int(label), "clean_correct": bool(self.clean_correct[i]),
                   "robust": {}, "broken_by": {}}
            for eps in eps_values:
                broken = []
                for spec in (s for s in self.specs if s.eps == eps):
                    if self.clean_correct[i] and not self.robust[spec.name][i]:
                        component = self.breakers.get(spec.name)
                        broken.append(spec.name + (f" ({component[i]})" if component is not None else ""))
                key = pixels.fraction(eps)
                row["robust"][key] = bool(self.clean_correct[i]) and not broken
                row["broken_by"][key] = broken
            rows.append(row)
        return rows

    def to_dict(self):
        attacks = []
        for spec in self.specs:
            values = dict(spec.to_dict(), accuracy=self.accuracy(spec))
            if spec.name in self.breakers:
                values["accuracy_after_each"] = self.after_each_component(spec)
            attacks.append(values)
        return {
            "num_examples": self.num_examples,
            "num_classes": self.num_classes,
            "clean_accuracy": self.clean_accuracy,
            "attacks": attacks,
            "worst_case": [
                {"eps": eps, "eps_255": eps * 255, "accuracy": acc, "attacks": names}
                for eps, (acc, names) in self.worst_case().items()
            ],
            "probes": self.probes,
            "examples": self.examples(),
        }


def _predict(logits_fn):
    return tf.function(
        lambda images: tf.argmax(logits_fn(images), axis=-1, output_type=tf.int32),
        reduce_retracing=True,
    )


def _random_targets(labels, num_classes, rng):
    """A uniformly drawn wrong class per example (Engstrom et al.'s targeted PGD)."""
    offsets = rng.integers(1, max(num_classes, 2), size=len(labels))
    return ((labels + offsets) % num_classes).astype(np.int32)


class _Probes:
    """Accumulates the measurements the false-robustness checks read."""

    def __init__(self, logits_fn, steps):
        self.logits_fn = logits_fn
        self.zero_gradient = 0
        self.seen = 0
        self.probability_rows = 0
        self.largest_repeat_change = 0.0
        self.largest_logit = 0.0
        self.unbounded_robust = 0
        unbounded = pgd.PGDConfig(1.0, 2.5 / steps, steps, random_start=False)
        self.unbounded = pgd.compile_attack(logits_fn, unbounded)

        @tf.function(reduce_retracing=True)
        def gradients(images, labels):
            # The gradient the attacks follow, so a zero here is a zero for them too.
            _, logits, grad = pgd.input_gradient(
                logits_fn, images, lambda logits: losses.cross_entropy(labels, logits)
            )
            return logits, logits_fn(images), grad

        self.gradients = gradients

    def add(self, images, labels, predict):
        logits, again, grad = (t.numpy() for t in self.gradients(images, labels))
        self.seen += len(labels)
        self.zero_gradient += int(np.sum(np.all(grad.reshape(len(grad), -1) == 0, axis=1)))
        in_unit = (logits >= 0).all(axis=1) & (logits <= 1).all(axis=1)
        self.probability_rows += int(np.sum(in_unit & (np.abs(logits.sum(axis=1) - 1) < 1e-3)))
        self.largest_repeat_change = max(self.largest_repeat_change, float(np.abs(logits - again).max()))
        self.largest_logit = max(self.largest_logit, float(np.abs(logits).max()))
        adversarial = self.unbounded(images, labels)
        self.unbounded_robust += int(np.sum(predict(adversarial).numpy() == labels))

    def result(self):
        return {
            "zero_gradient_share": self.zero_gradient / self.seen,
            "probability_rows_share": self.probability_rows / self.seen,
            "repeat_call_max_change": self.largest_repeat_change,
            "largest_abs_output": self.largest_logit,
            "unbounded_pgd_accuracy": self.unbounded_robust / self.seen,
        }


def passes(spec, num_classes):
    """``(gradient passes, forward passes)`` one batch costs ``spec``: an upper bound for the
    attacks that stop early on broken examples (Square, RayS, AutoAttack's later parts)."""
    targets = min(spec.num_targets, max(num_classes - 1, 1))
    steps, runs = spec.steps, spec.restarts
    if spec.attack == "fgsm":
        return 1, 1
    if spec.attack in ("pgd", "pgd_targeted"):
        return steps * runs, runs
    if spec.attack == "apgd_ce":
        return steps + 1, 1
    if spec.attack == "apgd_t":
        return (steps + 1) * targets, targets + 1
    if spec.attack == "fab_t":
        return steps * targets, steps * targets + targets + 1
    if spec.attack in ("square", "rays"):
        return 0, steps + 1
    apgd_targets = targets if num_classes >= 4 else 0  # autoattack
    return (steps + 1) * (1 + apgd_targets) + steps * targets, steps * targets + spec.queries + 4


def _pass_seconds(target, images, labels):
    """Seconds of one input-gradient pass and one forward pass on this batch, compiled."""
    gradient = tf.function(
        lambda x, y: pgd.input_gradient(target, x, lambda z: losses.cross_entropy(y, z))[2]
    )
    forward = tf.function(target)
    seconds = []
    for fn, args in ((gradient, (images, labels)), (forward, (images,))):
        fn(*args)  # trace and warm up
        started = time.time()
        for _ in range(3):
            np.asarray(fn(*args))
        seconds.append((time.time() - started) / 3)
    return seconds


def estimate_seconds(specs, target, images, labels, num_batches, num_classes, source=None):
    """A time for the whole plan on ``num_batches`` batches like this one, from the passes each
    attack makes and the measured time of a pass (compilation not included)."""
    times = {False: _pass_seconds(target, images, labels)}
    if source is not None and any(s.transfer for s in specs):
        times[True] = _pass_seconds(source, images, labels)
    total = 0.0
    for spec in specs:
        gradients, forwards = passes(spec, num_classes)
        gradient_seconds, forward_seconds = times[spec.transfer]
        total += gradients * gradient_seconds + forwards * forward_seconds
    return total * num_batches


def evaluate(target, batches, specs, *, source=None, seed=0, num_classes=None, log=None, num_batches=None):
    """Runs ``specs`` on every batch and returns a ``Report``.

    Args:
        target: logits function of the evaluated model (``logits_of(model)``).
        batches: iterable of ``(images, labels)``, pixels in [0, 1].
        specs: ``AttackSpec`` list (``plan``); transfer specs need ``source``.
        source: logits function of the black-box source model.
        num_classes: classes of the target (read from its output when None).
        log: optional callable of a line: an estimate of the whole before the first batch
            (with ``num_batches``), each attack's accuracy and time on the first batch, and a
            line per later batch.
        num_batches: how many batches ``batches`` holds, for the estimate.
    """
    if any(s.transfer for s in specs) and source is None:
        raise ValueError("The plan has black-box (transfer) attacks but no source model was given")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"The plan names an attack twice: {sorted(n for n in names if names.count(n) > 1)}")
    log = log or (lambda line: None)
    predict = _predict(target)
    longest = max([s.steps for s in specs if s.attack in ("pgd", "apgd_ce")] or [20])
    probes = _Probes(target, min(max(longest, 20), 100))
    compiled = {
        s.name: compile_spec(s, source if s.transfer else target, seed + i) for i, s in enumerate(specs)
    }
    rng = np.random.default_rng(seed)
    labels_all, clean_all, robust = [], [], {n: [] for n in names}
    started = time.time()
    for index, (images, labels) in enumerate(batches):
        images = tf.convert_to_tensor(images, tf.float32)
        labels = np.asarray(labels, np.int32)
        if num_classes is None:
            num_classes = int(target(images[:1]).shape[-1])
        if index == 0 and num_batches:
            estimate = estimate_seconds(specs, target, images, tf.constant(labels), num_batches, num_classes, source)
            log(f"{len(specs)} attacks on {num_batches} batch(es) of up to {len(labels)} examples: about "
                f"{_duration(estimate)} (an upper bound for Square, RayS and AutoAttack, which stop on broken "
                "examples; plus compilation)")
        clean = predict(images).numpy() == labels
        targets = tf.constant(_random_targets(labels, num_classes, rng))
        for spec in specs:
            ok = clean.copy()
            attack_started = time.time()
            for restart in range(spec.restarts):
                adversarial = compiled[spec.name](images, tf.constant(labels), targets, tf.constant(restart))
                ok &= predict(adversarial).numpy() == labels
            robust[spec.name].append(ok)
            if index == 0:
                log(f"  {spec.name:<44} {ok.mean():.4f} on the first batch ({_duration(time.time() - attack_started)})")
        probes.add(images, tf.constant(labels), predict)
        labels_all.append(labels)
        clean_all.append(clean)
        elapsed = time.time() - started
        if num_batches and index + 1 < num_batches:
            left = elapsed / (index + 1) * (num_batches - index - 1)
            log(f"batch {index + 1}/{num_batches} done, {_duration(elapsed)} so far, about {_duration(left)} left")
    if not labels_all:
        raise DataError("No examples to evaluate: the dataset is empty")
    return Report(
        specs=list(specs),
        labels=np.concatenate(labels_all),
        clean_correct=np.concatenate(clean_all),
        robust={n: np.concatenate(v) for n, v in robust.items()},
        probes=probes.result(),
        num_classes=num_classes,
        breakers={
            name: np.concatenate(run.breakers) for name, run in compiled.items() if isinstance(run, _AutoAttackRun)
        },
    )


def _duration(seconds):
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def standard_error(accuracy, n):
    """Binomial standard error of an accuracy over ``n`` examples."""
    return math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / max(n, 1))
