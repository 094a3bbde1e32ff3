"""The outcome of an evaluation, per example: ``Report``, and the standard errors its figures
carry.

For a deterministic model each outcome is a bool (robust or not). For a model with random
outputs it is the share of fresh draws that classified the example correctly, so every
accuracy is the model's expected accuracy over its randomness, and the worst case at an eps
is, per example, the lowest share any attack reached (the attacker keeps its best point).
"""

import dataclasses
import math

import numpy as np

from atalp_tf import pixels


def standard_error(accuracy, n):
    """Binomial standard error of an accuracy over ``n`` examples."""
    return math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / max(n, 1))


def draw_standard_error(shares, draws):
    """Standard error of an expected accuracy from ``draws`` draws per example (``shares``: each
    example's share of correct draws): how far scoring again with fresh draws moves it."""
    shares = np.asarray(shares, np.float64)
    if draws <= 1 or not len(shares):
        return 0.0
    per_example = shares * (1 - shares) / (draws - 1)
    return float(math.sqrt(per_example.sum()) / len(shares))


@dataclasses.dataclass
class Report:
    """Per-example outcomes of an evaluation; ``robust[name]`` is an array per attack (bool, or
    the share of correct draws when ``eot_samples`` > 1)."""

    specs: list
    labels: np.ndarray
    clean_correct: np.ndarray
    robust: dict
    probes: dict
    num_classes: int
    # What an attack reported beside its points, per name: AutoAttack's "breaker" (the
    # component whose point each example keeps) and "after" (robust after each component).
    details: dict = dataclasses.field(default_factory=dict)
    # Notes per attack name, such as an AutoAttack chain cut short for too few classes.
    notes: dict = dataclasses.field(default_factory=dict)
    # Draws each score averaged (1: a deterministic model, scored once).
    eot_samples: int = 1

    @property
    def num_examples(self):
        return len(self.labels)

    @property
    def randomised(self):
        return self.eot_samples > 1

    @property
    def clean_accuracy(self):
        return float(np.mean(self.clean_correct))

    def accuracy(self, spec):
        return float(np.mean(self.robust[spec.name]))

    def draw_error(self, outcomes):
        """The draws' standard error of the mean of ``outcomes`` (0 for a deterministic model)."""
        return draw_standard_error(outcomes, self.eot_samples)

    def worst_case_outcomes(self, eps):
        """Per example at ``eps``: robust only if every attack failed (the lowest share)."""
        return np.minimum.reduce([self.robust[s.name] for s in self.specs if s.eps == eps])

    def worst_case(self):
        """``{eps: (accuracy, names of the attacks at eps)}``, robust only if every attack failed."""
        result = {}
        for eps in sorted({s.eps for s in self.specs}):
            names = [s.name for s in self.specs if s.eps == eps]
            result[eps] = (float(np.mean(self.worst_case_outcomes(eps))), names)
        return result

    def after_each_component(self, spec):
        """AutoAttack's running robust accuracy: ``{component: accuracy after it}``."""
        return {name: float(np.mean(v)) for name, v in self.details[spec.name]["after"].items()}

    @property
    def breakers(self):
        """``{AutoAttack name: per example, the component that broke it}``."""
        return {name: d["breaker"] for name, d in self.details.items() if "breaker" in d}

    def _outcome(self, value):
        return float(value) if self.randomised else bool(value)

    def examples(self):
        """Per example: its label, whether it was right clean, and at each eps whether it
        survived every attack and which attacks broke it (an AutoAttack row says which of its
        components did). For a randomised model the outcomes are shares of correct draws, and
        an attack "broke" an example when it lowered that share below the clean one."""
        rows = []
        eps_values = sorted({s.eps for s in self.specs})
        breakers = self.breakers
        worst = {eps: self.worst_case_outcomes(eps) for eps in eps_values}
        for i, label in enumerate(self.labels):
            clean = self.clean_correct[i]
            row = {"index": i, "label": int(label), "clean_correct": self._outcome(clean),
                   "robust": {}, "broken_by": {}}
            for eps in eps_values:
                broken = []
                for spec in (s for s in self.specs if s.eps == eps):
                    if clean and self.robust[spec.name][i] < clean:
                        component = breakers.get(spec.name)
                        broken.append(spec.name + (f" ({component[i]})" if component is not None else ""))
                key = pixels.fraction(eps)
                row["robust"][key] = self._outcome(worst[eps][i])
                row["broken_by"][key] = broken
            rows.append(row)
        return rows

    def to_dict(self):
        attacks = []
        for spec in self.specs:
            values = dict(spec.to_dict(), accuracy=self.accuracy(spec))
            if self.randomised:
                values["draw_standard_error"] = self.draw_error(self.robust[spec.name])
            if spec.name in self.details and "after" in self.details[spec.name]:
                values["accuracy_after_each"] = self.after_each_component(spec)
            if spec.name in self.notes:
                values["note"] = self.notes[spec.name]
            attacks.append(values)
        worst = []
        for eps, (acc, names) in self.worst_case().items():
            entry = {"eps": eps, "eps_255": eps * 255, "accuracy": acc, "attacks": names}
            if self.randomised:
                entry["draw_standard_error"] = self.draw_error(self.worst_case_outcomes(eps))
            worst.append(entry)
        values = {
            "num_examples": self.num_examples,
            "num_classes": self.num_classes,
            "clean_accuracy": self.clean_accuracy,
            "attacks": attacks,
            "worst_case": worst,
            "probes": self.probes,
            "examples": self.examples(),
        }
        if self.randomised:
            values["randomised"] = {
                "eot_samples": self.eot_samples,
                "scoring": "expected accuracy: per example, the share of eot_samples fresh draws that "
                           "classify it correctly, averaged over the examples",
                "clean_draw_standard_error": self.draw_error(self.clean_correct),
            }
        return values
