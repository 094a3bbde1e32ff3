"""What an evaluation runs: the table of evaluation attacks, ``AttackSpec`` (one attack of a
plan), ``plan`` (the attacks for a set of eps) and what a plan costs.

Every attack module answers one call, ``run(logits_fn, x, labels, *, eps, budget, seed,
**options) -> (x_adv, reports)``, and tells its cost with ``cost(budget, num_classes,
**options) -> (gradient passes, forward passes)``; a row of ``ATTACK_TABLE`` says how a spec
becomes that call. Adding an evaluation attack is one module and one row (and its name in
``atalp_tf.choices.ATTACKS``, which the command lines validate before TensorFlow loads).
"""

import dataclasses
import time
import typing

import numpy as np
import tensorflow as tf

from atalp_tf import losses
from atalp_tf import pixels
from atalp_tf.attacks import apgd
from atalp_tf.attacks import autoattack
from atalp_tf.attacks import core
from atalp_tf.attacks import fab
from atalp_tf.attacks import pgd
from atalp_tf.attacks import rays
from atalp_tf.attacks import square
from atalp_tf.choices import ATTACKS
from atalp_tf.choices import DEFAULT_ATTACKS


class Row(typing.NamedTuple):
    """How an ``AttackSpec`` of one attack name runs.

    module: the attack module (its ``run`` and ``cost``).
    options: the spec to the module's keyword options.
    budgets: which budgets a plan gives it: ``"one"`` (a single step), ``"each"`` (every
        iteration count), ``"longest"`` (the largest count), ``"queries"`` or ``"autoattack"``.
    unit: how its name shows the budget: ``""`` (not at all), ``"it"`` or ``"q"``.
    restarts: whether ``restarts`` repeat it from new random starts.
    targeted: whether it takes random target classes (drawn once per batch by the evaluation).
    min_classes: the fewest classes it is defined for; a plan leaves it out below.
    """

    module: typing.Any
    options: typing.Callable = lambda spec: {}
    budgets: str = "longest"
    unit: str = "it"
    restarts: bool = False
    targeted: bool = False
    min_classes: int = 2


ATTACK_TABLE = {
    "fgsm": Row(pgd, lambda s: dict(step_size=s.eps, random_start=False), budgets="one", unit=""),
    "pgd": Row(pgd, lambda s: dict(step_size=s.pgd_step_size), budgets="each", restarts=True),
    "pgd_targeted": Row(pgd, lambda s: dict(step_size=s.pgd_step_size), restarts=True, targeted=True),
    "apgd_ce": Row(apgd, restarts=True),
    "apgd_t": Row(apgd, lambda s: dict(loss="targeted_dlr", num_targets=s.num_targets), min_classes=4),
    "fab_t": Row(fab, lambda s: dict(num_targets=s.num_targets)),
    "square": Row(square, budgets="queries", unit="q"),
    "rays": Row(rays, budgets="queries", unit="q"),
    "autoattack": Row(
        autoattack, lambda s: dict(num_targets=s.num_targets, queries=s.queries, randomised=s.eot_samples > 1),
        budgets="autoattack",
    ),
}
assert tuple(ATTACK_TABLE) == ATTACKS, "every attack name has one row, in the order reports list them"


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One attack of the plan.

    Args:
        attack: one of ``ATTACKS`` (a row of ``ATTACK_TABLE``).
        eps: L-inf radius in [0, 1] pixel units.
        steps: iterations (PGD, APGD, FAB, AutoAttack's APGD and FAB), or queries (Square,
            RayS); 1 for FGSM.
        restarts: independent runs; an example is robust only if all fail.
        step_size: PGD's step; None for ``2.5 * eps / steps`` (Madry et al.).
        transfer: made on the source model and given to the target (black-box).
        num_targets: target classes tried by APGD-T and FAB-T.
        queries: AutoAttack's Square queries.
        eot_samples: draws each gradient, score and query averages over (EOT, for a model
            with random outputs); 1 for a deterministic model. The evaluation sets it.

    AutoAttack's standard settings are 100 iterations, 9 targets and 5,000 queries
    (``atalp_tf.attacks.autoattack``); any other budget is named as reduced, never "autoattack".
    With ``eot_samples`` above 1 it is the reference's randomised version, "autoattack-rand".
    """

    attack: str
    eps: float
    steps: int = 1
    restarts: int = 1
    step_size: float | None = None
    transfer: bool = False
    num_targets: int = 9
    queries: int = autoattack.QUERIES
    eot_samples: int = 1

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ValueError(f"`attack` must be one of {ATTACKS}. Received: attack={self.attack!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"`eps` must be in (0, 1] (pixel units). Received: eps={self.eps}")
        if self.steps < 1 or self.restarts < 1 or self.eot_samples < 1:
            raise ValueError(
                f"`steps`, `restarts` and `eot_samples` must be >= 1. Received: steps={self.steps}, "
                f"restarts={self.restarts}, eot_samples={self.eot_samples}"
            )
        if self.attack == "autoattack" and (self.restarts, self.transfer) != (1, False):
            raise ValueError(
                "AutoAttack runs once, on the model itself. "
                f"Received: restarts={self.restarts}, transfer={self.transfer}"
            )

    @property
    def row(self):
        return ATTACK_TABLE[self.attack]

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
        if self.attack == "autoattack" and self.eot_samples > 1:
            # The randomised version has neither targets nor Square.
            label = "autoattack-rand" + ("" if self.steps == autoattack.STEPS else f"-reduced-{self.steps}it")
        elif self.attack == "autoattack":
            label = "autoattack"
            if not self.standard_autoattack:
                label += f"-reduced-{self.steps}it-{self.num_targets}t-{self.queries}q"
        else:
            unit = self.row.unit
            label = self.attack + (f"-{self.steps}" + ("q" if unit == "q" else "") if unit else "")
        if self.restarts > 1:
            label += f"x{self.restarts}"
        if self.eot_samples > 1:
            label += f"-eot{self.eot_samples}"
        if self.transfer:
            label = "transfer " + label
        return f"{label} eps={pixels.fraction(self.eps)}"

    def options(self):
        """The keyword options of the attack module's ``run``."""
        return self.row.options(self)

    def cost(self, num_classes):
        """``(gradient passes, forward passes)`` of one run of every restart on a batch, each
        pass counted once per EOT draw; the scoring of the result is not included."""
        gradients, forwards = self.row.module.cost(self.steps, num_classes, **self.options())
        runs = self.restarts * self.eot_samples
        return gradients * runs, forwards * runs

    def to_dict(self):
        values = dataclasses.asdict(self)
        if self.attack != "autoattack":
            del values["queries"]
        values.update(name=self.name, box=self.box, eps_255=self.eps * 255)
        if "step_size" in self.options():
            values["step_size"] = self.options()["step_size"]
        return values


def plan(
    eps_values,
    steps_values,
    attack_names=None,
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
    made on the source model. ``attack_names`` defaults to ``choices.DEFAULT_ATTACKS``.

    An attack is left out for fewer classes than its loss needs (APGD-T: 4).
    """
    longest = max(steps_values)
    specs = []

    def specs_of(name, eps, **extra):
        row = ATTACK_TABLE[name]
        if num_classes is not None and num_classes < row.min_classes:
            return []
        common = dict(num_targets=num_targets, **extra)
        if row.restarts:
            common.update(restarts=restarts, step_size=step_size)
        if row.budgets == "autoattack":
            steps, targets, aa_queries = autoattack_budget
            return [AttackSpec(name, eps, steps, num_targets=targets, queries=aa_queries)]
        budgets = {"one": [1], "each": list(steps_values), "longest": [longest], "queries": [queries]}[row.budgets]
        return [AttackSpec(name, eps, budget, **common) for budget in budgets]

    for eps in eps_values:
        for name in attack_names or DEFAULT_ATTACKS:
            specs += specs_of(name, eps)
        if transfer:
            specs += specs_of("fgsm", eps, transfer=True) + specs_of("pgd", eps, transfer=True)
    return specs


def pass_seconds(target, images, labels):
    """Seconds of one input-gradient pass and one forward pass on this batch, compiled (one
    draw of a randomised model: ``AttackSpec.cost`` counts the draws)."""
    one_draw = core.one_draw(target)
    gradient = tf.function(
        lambda x, y: core.input_gradient(one_draw, x, lambda z: losses.cross_entropy(y, z)).gradient
    )
    forward = tf.function(one_draw)
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
    attack makes (plus one scoring pass per restart) and the measured time of a pass
    (compilation not included)."""
    times = {False: pass_seconds(target, images, labels)}
    if source is not None and any(s.transfer for s in specs):
        times[True] = pass_seconds(source, images, labels)
    total = 0.0
    for spec in specs:
        gradients, forwards = spec.cost(num_classes)
        forwards += spec.restarts * core.samples_of(target)
        gradient_seconds, forward_seconds = times[spec.transfer]
        total += gradients * gradient_seconds + forwards * forward_seconds
    return total * num_batches
