"""Each false-robustness check fires on a model built to trip it and stays quiet on an honest one."""

import numpy as np
import pytest
import tensorflow as tf

from atalp_tf.evaluation import checks as robustness_checks
from atalp_tf.evaluation import robustness
from atalp_tf.evaluation.outcomes import Report
from atalp_tf.evaluation.plan import AttackSpec

EPS = 8 / 255


@pytest.fixture(scope="module")
def batches(digits16):
    _, _, x, y = digits16
    return [(x[:96].astype(np.float32), y[:96].astype(np.int32))]


def _fired(report):
    return {c.name for c in robustness_checks.run_checks(report) if c.fired}


@pytest.mark.slow
def test_an_honest_model_trips_no_check(standard_model, source_model, batches):
    specs = [AttackSpec("fgsm", e) for e in (4 / 255, EPS)]
    specs += [AttackSpec("pgd", e, s) for e in (4 / 255, EPS) for s in (5, 10)]
    specs += [AttackSpec("apgd_ce", EPS, 10), AttackSpec("square", EPS, 200)]
    specs += [AttackSpec("pgd", EPS, 10, transfer=True)]
    report = robustness.evaluate(
        robustness.logits_of(standard_model), batches, specs,
        source=robustness.logits_of(source_model), seed=0,
    )
    assert _fired(report) == set()
    assert report.probes["unbounded_pgd_accuracy"] < 0.05


@pytest.mark.slow
def test_a_gradient_masking_model_trips_the_gradient_checks(standard_model, batches):
    # Logits scaled by 1e4 saturate the softmax: the cross-entropy's input gradient is exactly
    # zero on confident inputs, while the decisions are the honest model's.
    honest = robustness.logits_of(standard_model)
    masked = lambda images: 1e4 * honest(images)  # noqa: E731
    specs = [
        AttackSpec("fgsm", EPS),
        AttackSpec("pgd", EPS, 10),
        AttackSpec("square", EPS, 300),
        AttackSpec("pgd", EPS, 10, transfer=True),
    ]
    report = robustness.evaluate(masked, batches, specs, source=honest, seed=0)
    fired = _fired(report)
    assert {"zero_gradients", "unbounded_attack_fails", "gradient_free_beats_gradient",
            "black_box_beats_gray_box"} <= fired
    assert not {"outputs_probabilities", "random_outputs"} & fired
    # The worst case still reports what Square and the transfer attack found.
    worst, _ = report.worst_case()[EPS]
    assert worst < report.accuracy(specs[1]) - 0.1


@pytest.mark.slow
def test_the_scale_invariant_dlr_loss_sees_through_the_saturated_softmax(standard_model, batches):
    honest = robustness.logits_of(standard_model)
    specs = [AttackSpec("pgd", EPS, 10), AttackSpec("apgd_t", EPS, 10, num_targets=3)]
    masked = robustness.evaluate(lambda images: 1e4 * honest(images), batches, specs, seed=0)
    plain = robustness.evaluate(honest, batches, specs, seed=0)
    assert masked.accuracy(specs[1]) < masked.accuracy(specs[0]) - 0.2
    assert masked.accuracy(specs[1]) <= plain.accuracy(specs[1]) + 0.05


def test_a_model_that_outputs_probabilities_is_flagged(standard_model, batches):
    honest = robustness.logits_of(standard_model)
    report = robustness.evaluate(
        lambda images: tf.nn.softmax(honest(images)), batches, [AttackSpec("pgd", EPS, 5)]
    )
    assert "outputs_probabilities" in _fired(report)


@pytest.mark.slow
def test_a_random_model_is_attacked_with_eot_and_flagged_only_without_it(standard_model, batches):
    honest = robustness.logits_of(standard_model)
    noisy = lambda images: honest(images) + tf.random.normal([tf.shape(images)[0], 10])  # noqa: E731
    lines = []
    report = robustness.evaluate(noisy, batches, [AttackSpec("pgd", EPS, 5)], log=lines.append)
    assert report.eot_samples == 20 and report.specs[0].name == "pgd-5-eot20 eps=8/255"
    assert any("it is randomised" in line for line in lines)
    assert "random_outputs" not in _fired(report)
    forced_off = robustness.evaluate(noisy, batches, [AttackSpec("pgd", EPS, 5)], eot_samples=1)
    assert forced_off.eot_samples == 1 and "random_outputs" in _fired(forced_off)


def _report(accuracies, n=400):
    """A report whose attacks have the given accuracies (``{spec: accuracy}``)."""
    specs = list(accuracies)
    robust = {s.name: np.arange(n) < round(a * n) for s, a in accuracies.items()}
    probes = dict(zero_gradient_share=0.0, probability_rows_share=0.0, repeat_call_max_change=0.0,
                  largest_abs_output=5.0, unbounded_pgd_accuracy=0.0)
    return Report(specs, np.zeros(n, np.int32), np.ones(n, bool), robust, probes, 10)


def test_accuracy_rising_with_eps_or_iterations_is_flagged():
    rising_eps = _report({AttackSpec("pgd", 4 / 255, 10): 0.40, AttackSpec("pgd", EPS, 10): 0.55})
    assert _fired(rising_eps) == {"accuracy_rises_with_eps"}
    rising_steps = _report({AttackSpec("pgd", EPS, 10): 0.40, AttackSpec("pgd", EPS, 100): 0.55})
    assert _fired(rising_steps) == {"more_iterations_raise_accuracy"}
    # Differences within sampling noise (two standard errors plus a point) do not fire.
    noise = _report({AttackSpec("pgd", EPS, 10): 0.40, AttackSpec("pgd", EPS, 100): 0.44})
    assert _fired(noise) == set()


def test_gradient_attacks_that_disagree_are_flagged_and_the_lower_one_trusted():
    misled = _report({AttackSpec("pgd", EPS, 50): 0.74, AttackSpec("apgd_ce", EPS, 50): 0.22})
    check = next(c for c in robustness_checks.run_checks(misled) if c.name == "gradient_attacks_disagree")
    assert check.fired and "trust apgd_ce-50" in check.detail and "pgd-50 eps=8/255: 0.740" in check.detail
    agree = _report({AttackSpec("pgd", EPS, 50): 0.40, AttackSpec("apgd_ce", EPS, 50): 0.37})
    assert "gradient_attacks_disagree" not in _fired(agree)
    # Shorter PGD runs and FGSM are weaker by design: only the longest PGD is compared.
    weaker_by_design = _report({AttackSpec("fgsm", EPS): 0.9, AttackSpec("pgd", EPS, 5): 0.7,
                                AttackSpec("pgd", EPS, 50): 0.41, AttackSpec("apgd_ce", EPS, 50): 0.40})
    assert "gradient_attacks_disagree" not in _fired(weaker_by_design)
