"""Checks that flag a robustness report which may overstate robustness.

Each check reads a ``robustness.Report`` and returns a ``Check``: whether it fired, what it
saw, and what to do. They follow Carlini et al.'s "On Evaluating Adversarial Robustness" and
Athalye et al.'s signs of obfuscated gradients; logit pairing is the classic case that needed
them (Engstrom et al. 2018, Mosbach et al. 2018). A fired check does not prove the number
wrong, and a quiet one does not prove it right: it says where to look.

Accuracy comparisons allow ``tolerance`` plus two binomial standard errors, so sampling noise
on a small evaluation set does not fire a check.
"""

import dataclasses

from atalp_tf import pixels
from atalp_tf.choices import GRADIENT_ATTACKS
from atalp_tf.choices import GRADIENT_FREE_ATTACKS
from atalp_tf.evaluation.robustness import standard_error

ZERO_GRADIENT_SHARE = 0.01
UNBOUNDED_ACCURACY = 0.10
REPEAT_CHANGE = 1e-4


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    fired: bool
    detail: str
    advice: str
    ran: bool = True  # False: the report holds none of the attacks this check compares

    def to_dict(self):
        return dataclasses.asdict(self)


def _not_run(name, needs, advice):
    return Check(name, False, f"not run: it needs {needs}", advice, ran=False)


def _findings(name, found, none_seen, advice):
    """A comparison check: it fires when it found anything, and says what or that nothing was."""
    return Check(name, bool(found), "; ".join(found) or none_seen, advice)


def _slack(report, accuracy, tolerance):
    return tolerance + 2 * standard_error(accuracy, report.num_examples)


def _rises(report, curves, tolerance, describe):
    """Where accuracy rises along a curve by more than sampling explains: each curve is a list
    of (budget, accuracy) under one key, and ``describe(key, b1, a1, b2, a2)`` words a rise."""
    rises = []
    for key in sorted(curves):
        curve = sorted(curves[key])
        for (b1, a1), (b2, a2) in zip(curve, curve[1:]):
            if a2 > a1 + _slack(report, a1, tolerance):
                rises.append(describe(key, b1, a1, b2, a2))
    return rises


def _gray(report, attack, eps):
    return [s for s in report.specs if s.attack == attack and s.eps == eps and not s.transfer]


def accuracy_grows_with_eps(report, tolerance=0.01):
    """Gray-box PGD accuracy must not rise as eps grows (same iterations)."""
    advice = (
        "A larger ball contains the smaller one, so a stronger attack can only do better: the "
        "attack is failing to optimise (gradient masking or a bad step size). Try APGD, more "
        "iterations, a step size proportional to eps, and Square."
    )
    gray = [s for s in report.specs if s.attack == "pgd" and not s.transfer]
    if len({s.eps for s in gray}) < 2:
        return _not_run("accuracy_rises_with_eps", "gray-box PGD at two or more eps", advice)
    curves = {steps: [(s.eps, report.accuracy(s)) for s in gray if s.steps == steps] for steps in {s.steps for s in gray}}
    rises = _rises(report, curves, tolerance, lambda steps, e1, a1, e2, a2: (
        f"PGD-{steps}: {a1:.3f} at eps {pixels.fraction(e1)} -> {a2:.3f} at {pixels.fraction(e2)}"
    ))
    return _findings(
        "accuracy_rises_with_eps", rises, "gray-box PGD accuracy does not rise with eps", advice
    )


def unbounded_attack_succeeds(report, threshold=UNBOUNDED_ACCURACY):
    """PGD with eps = 1 (any image) must take accuracy to about zero."""
    accuracy = report.probes["unbounded_pgd_accuracy"]
    return Check(
        "unbounded_attack_fails",
        accuracy > threshold,
        f"accuracy under PGD with eps = 1 (the whole pixel range) is {accuracy:.3f}",
        "With an unlimited budget every input can be turned into another class; an attack that "
        "cannot do it is not following a useful gradient. Treat every robust accuracy above as "
        "unverified; check for zero or random gradients and run Square.",
    )


def more_iterations_help(report, tolerance=0.01):
    """Accuracy must not rise with more PGD iterations at the same eps."""
    advice = (
        "More iterations of the same attack should only help it. The attack is not converging: "
        "use a smaller step size or APGD, and check the loss along the attack path."
    )
    curves = {eps: [(s.steps, report.accuracy(s)) for s in _gray(report, "pgd", eps)] for eps in {s.eps for s in report.specs}}
    if not any(len({steps for steps, _ in curve}) > 1 for curve in curves.values()):
        return _not_run("more_iterations_raise_accuracy", "gray-box PGD at two or more iteration counts", advice)
    rises = _rises(report, curves, tolerance, lambda eps, n1, a1, n2, a2: (
        f"eps {pixels.fraction(eps)}: {a1:.3f} at {n1} steps -> {a2:.3f} at {n2}"
    ))
    return _findings(
        "more_iterations_raise_accuracy", rises, "more PGD iterations never raised accuracy", advice
    )


def black_box_weaker(report, tolerance=0.01):
    """Transfer attacks from another model should not beat the same attack on the model itself."""
    advice = (
        "Examples made on another model should not hurt more than ones made on this model "
        "with its own gradients. This model's gradients are misleading the white-box attack "
        "(gradient masking): its gray-box numbers overstate robustness."
    )
    pairs = [
        (spec, gray) for spec in report.specs if spec.transfer
        for gray in _gray(report, spec.attack, spec.eps) if gray.steps == spec.steps
    ]
    if not pairs:
        return _not_run("black_box_beats_gray_box", "a black-box attack (--source_model) and its gray-box twin", advice)
    stronger = []
    for spec, gray in pairs:
        a_black, a_gray = report.accuracy(spec), report.accuracy(gray)
        if a_black < a_gray - _slack(report, a_gray, tolerance):
            stronger.append(f"{spec.name}: {a_black:.3f} < gray-box {a_gray:.3f}")
    return _findings(
        "black_box_beats_gray_box", stronger, "no black-box attack beat its gray-box counterpart", advice
    )


def gradient_free_weaker(report, tolerance=0.01):
    """Square (scores only) and RayS (labels only) should not beat the gradient attacks."""
    advice = (
        "An attack that never sees a gradient did better than all that follow one: the "
        "gradients are masked or broken. Report the worst case, not the gradient attacks."
    )
    compared = []
    for spec in (s for s in report.specs if s.attack in GRADIENT_FREE_ATTACKS and not s.transfer):
        gradient = [
            report.accuracy(s) for s in report.specs
            if s.attack in GRADIENT_ATTACKS and s.eps == spec.eps and not s.transfer
        ]
        if gradient:
            compared.append((spec, gradient))
    if not compared:
        return _not_run("gradient_free_beats_gradient", "Square or RayS beside a gradient attack", advice)
    stronger = []
    for spec, gradient in compared:
        if report.accuracy(spec) < min(gradient) - _slack(report, min(gradient), tolerance):
            stronger.append(f"{spec.name}: {report.accuracy(spec):.3f} < best gradient attack {min(gradient):.3f}")
    return _findings(
        "gradient_free_beats_gradient", stronger, "no gradient-free attack beat the gradient attacks", advice
    )


def gradients_present(report, threshold=ZERO_GRADIENT_SHARE):
    share = report.probes["zero_gradient_share"]
    return Check(
        "zero_gradients",
        share > threshold,
        f"{share:.1%} of the inputs have an all-zero input gradient of the cross-entropy",
        "Gradient attacks cannot move these inputs. Look for non-differentiable operations "
        "(rounding, quantisation, argmax) or saturated softmax outputs; attack with Square or "
        "RayS, or approximate the layer with BPDA (Athalye et al.).",
    )


def outputs_are_logits(report):
    share = report.probes["probability_rows_share"]
    return Check(
        "outputs_probabilities",
        share > 0.99,
        f"{share:.1%} of the outputs are in [0, 1] and sum to 1",
        "The attacks expect logits. Cross-entropy over probabilities applies softmax twice and "
        "its gradient vanishes; remove the final softmax (export the logits) and evaluate again.",
    )


def outputs_deterministic(report, threshold=REPEAT_CHANGE):
    change = report.probes["repeat_call_max_change"]
    scale = max(report.probes["largest_abs_output"], 1.0)
    return Check(
        "random_outputs",
        change > threshold * scale,
        f"two calls on the same inputs differ by up to {change:.3g} (outputs up to {scale:.3g})",
        "A randomised model needs attacks that average gradients over its randomness (EOT, "
        "Athalye et al.); one-sample gradients overstate its robustness. Check that dropout or "
        "noise layers are off with training=False.",
    )


ALL_CHECKS = (
    accuracy_grows_with_eps,
    unbounded_attack_succeeds,
    more_iterations_help,
    black_box_weaker,
    gradient_free_weaker,
    gradients_present,
    outputs_are_logits,
    outputs_deterministic,
)


def run_checks(report):
    return [check(report) for check in ALL_CHECKS]
