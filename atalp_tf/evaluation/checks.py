"""Checks that flag a robustness report which may overstate robustness.

Each check reads an ``outcomes.Report`` and returns a ``Check``: whether it fired, what it
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
from atalp_tf.evaluation.outcomes import standard_error
from atalp_tf.evaluation.robustness import REPEAT_CHANGE

ZERO_GRADIENT_SHARE = 0.01
UNBOUNDED_ACCURACY = 0.10
# Iterative gradient attacks at one eps whose accuracies differ by more than this plus three
# standard errors of their paired difference disagree: one of them follows a misleading gradient.
DISAGREEMENT = 0.10
# The iterative gradient attacks compared (FGSM and targeted PGD toward random classes are
# weaker by design).
ITERATIVE_GRADIENT_ATTACKS = ("pgd", "apgd_ce", "apgd_t", "fab_t")


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
    curves = {steps: [(s.eps, report.accuracy(s)) for s in gray if s.steps == steps]
              for steps in {s.steps for s in gray}}
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
    curves = {eps: [(s.steps, report.accuracy(s)) for s in _gray(report, "pgd", eps)]
              for eps in {s.eps for s in report.specs}}
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
        return _not_run("black_box_beats_gray_box", "a black-box attack (`source_model`) and its gray-box twin", advice)
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


def _outputs_probabilities(report):
    return report.probes["probability_rows_share"] > 0.99


def gradients_present(report, threshold=ZERO_GRADIENT_SHARE):
    share = report.probes["zero_gradient_share"]
    if _outputs_probabilities(report) and not report.probes.get("softmax_logits_recovered"):
        cause = (
            f"The model outputs probabilities (the largest {report.probes['largest_probability']:.8g}) and "
            "no softmax to look behind was found, so the attacks take their logarithm: a probability "
            "that rounds to 1 in float32 has no gradient left. Export the logits (drop the final "
            "softmax) and evaluate again; meanwhile trust Square and RayS."
        )
    else:
        cause = (
            "Look for non-differentiable operations (rounding, quantisation, argmax) or logits so "
            f"large (up to {report.probes['largest_abs_output']:.3g}) that the float32 softmax "
            "saturates; attack with Square or RayS, or approximate the layer with BPDA (Athalye et al.)."
        )
    return Check(
        "zero_gradients",
        share > threshold,
        f"{share:.1%} of the inputs have an all-zero input gradient of the cross-entropy",
        "Gradient attacks cannot move these inputs. " + cause,
    )


def outputs_are_logits(report):
    share = report.probes["probability_rows_share"]
    recovered = report.probes.get("softmax_logits_recovered")
    detail = f"{share:.1%} of the outputs are in [0, 1] and sum to 1"
    if _outputs_probabilities(report):
        detail += (
            "; the attacks used the logits before the model's softmax" if recovered
            else "; the attacks used their logarithm (the logits up to a constant per example)"
        )
    return Check(
        "outputs_probabilities",
        _outputs_probabilities(report) and not recovered,
        detail,
        "The model's probabilities were attacked through their logarithm, which is exact until a "
        "probability rounds to 1 in float32. Export the logits (drop the final softmax) to be sure.",
    )


def outputs_deterministic(report, threshold=REPEAT_CHANGE):
    change = report.probes["repeat_call_max_change"]
    scale = max(report.probes["largest_abs_output"], 1.0)
    random = change > threshold * scale
    detail = f"two calls on the same inputs differ by up to {change:.3g} (outputs up to {scale:.3g})"
    if report.randomised:
        detail += (f"; attacked with EOT over {report.eot_samples} draws and scored by the expected "
                   "accuracy over fresh draws")
    return Check(
        "random_outputs",
        random and not report.randomised,
        detail,
        "A randomised model needs attacks that average gradients over its randomness (EOT, "
        "Athalye et al.); one-sample gradients and one-draw scores overstate its robustness. "
        "Evaluate without eot_samples=1 (the default averages 20 draws), and check that dropout "
        "or noise layers are meant to be on with training=False.",
    )


def attacks_agree(report, tolerance=DISAGREEMENT):
    """Iterative gradient attacks at one eps should roughly agree; one far weaker than another
    (say PGD-50 at 0.74 beside APGD-CE at 0.22) follows a gradient that misleads it."""
    advice = (
        "Two gradient attacks on the same model and budget should find about as much. When one "
        "finds far less, its gradient or step is misled (a masked or noisy gradient, a loss that "
        "saturates, a fixed step that overshoots): trust the lower figure, which the worst case "
        "already takes, and treat the weaker attack's figure as meaningless for this model."
    )
    found = []
    compared = False
    for eps in sorted({s.eps for s in report.specs}):
        specs = [s for s in report.specs if s.attack in ITERATIVE_GRADIENT_ATTACKS and s.eps == eps and not s.transfer]
        pgd_steps = [s.steps for s in specs if s.attack == "pgd"]
        specs = [s for s in specs if s.attack != "pgd" or s.steps == max(pgd_steps)]
        if len(specs) < 2:
            continue
        compared = True
        weakest = max(specs, key=report.accuracy)
        strongest = min(specs, key=report.accuracy)
        difference = report.robust[weakest.name].astype(float) - report.robust[strongest.name].astype(float)
        error = float(difference.std()) / max(report.num_examples, 1) ** 0.5
        gap = report.accuracy(weakest) - report.accuracy(strongest)
        if gap > tolerance + 3 * error:
            found.append(
                f"{weakest.name}: {report.accuracy(weakest):.3f} against {strongest.name}: "
                f"{report.accuracy(strongest):.3f} (trust {strongest.name})"
            )
    if not compared:
        return _not_run("gradient_attacks_disagree", "two iterative gradient attacks at one eps", advice)
    return _findings("gradient_attacks_disagree", found, "the iterative gradient attacks agree", advice)


ALL_CHECKS = (
    accuracy_grows_with_eps,
    unbounded_attack_succeeds,
    more_iterations_help,
    black_box_weaker,
    gradient_free_weaker,
    gradients_present,
    outputs_are_logits,
    outputs_deterministic,
    attacks_agree,
)


def run_checks(report):
    return [check(report) for check in ALL_CHECKS]
