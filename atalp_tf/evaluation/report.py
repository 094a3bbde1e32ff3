"""A robustness evaluation as an ``Evaluation`` (what ``atalp_tf.evaluate`` returns), a terminal
table, JSON, CSV and figure, and the one function that evaluates a model into a directory
(``evaluate_into``: the evaluate command and the suites)."""

import csv
import dataclasses
import os

from atalp_tf import atomic
from atalp_tf import pixels
from atalp_tf import plots
from atalp_tf.evaluation import checks as robustness_checks
from atalp_tf.evaluation import robustness
from atalp_tf.evaluation.outcomes import Report
from atalp_tf.runs.rundir import writing_into

CSV_FIELDS = ("name", "attack", "box", "eps", "eps_255", "steps", "restarts", "step_size", "accuracy")


def table(report, checks, title=""):
    """The lines printed on the terminal: one row per attack, the worst case, the checks."""
    lines = []
    if title:
        lines.append(title)
    def error(outcomes):
        return f" +- {report.draw_error(outcomes):.4f}" if report.randomised else ""

    if report.randomised:
        lines.append(
            f"randomised model: every accuracy is the expected accuracy over {report.eot_samples} fresh draws "
            "per example, +- the draws' standard error (attacks average their gradients over as many draws)"
        )
    clean = f"{report.clean_accuracy:.4f}{error(report.clean_correct)}"
    lines.append(f"clean accuracy {clean} on {report.num_examples} examples")
    lines.append(f"  {'attack':<34} {'box':<5} {'eps':>16} {'steps':>6} {'restarts':>8} {'accuracy':>9}")
    for spec in report.specs:
        eps = pixels.both(spec.eps)
        lines.append(
            f"  {spec.name:<34} {spec.box:<5} {eps:>16} {spec.steps:>6} {spec.restarts:>8} "
            f"{report.accuracy(spec):>9.4f}{error(report.robust[spec.name])}"
        )
        if spec.name in report.breakers:
            steps = ", ".join(f"{n} {a:.4f}" for n, a in report.after_each_component(spec).items())
            lines.append(f"    accuracy after each of its attacks: {steps}")
        if spec.name in report.notes:
            lines.append(f"    note: {report.notes[spec.name]}")
    for eps, (accuracy, names) in report.worst_case().items():
        lines.append(
            f"  worst case per example at eps {pixels.both(eps)}: {accuracy:.4f}"
            f"{error(report.worst_case_outcomes(eps))} over {len(names)} attacks"
        )
    fired = [c for c in checks if c.fired]
    ran = [c for c in checks if c.ran]
    not_run = f", {len(checks) - len(ran)} not run" if len(ran) < len(checks) else ""
    lines.append(f"checks: {len(fired)} of {len(ran)} fired{not_run}")
    for check in checks:
        status = "WARNING" if check.fired else ("ok" if check.ran else "not run")
        lines.append(f"  [{status}] {check.name}: {check.detail}")
        if check.fired:
            lines.append(f"      what to do: {check.advice}")
    return lines


def to_json(report, checks, **context):
    values = dict(context)
    values.update(report.to_dict())
    values["checks"] = [c.to_dict() for c in checks]
    values["warnings"] = [c.name for c in checks if c.fired]
    return values


def write_csv(path, report):
    with atomic.replacing(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerow(dict(name="clean", attack="none", box="", eps=0, eps_255=0, steps=0,
                             restarts=0, step_size=0, accuracy=report.clean_accuracy))
        for spec in report.specs:
            writer.writerow(dict(spec.to_dict(), accuracy=report.accuracy(spec)))
        for eps, (accuracy, _) in report.worst_case().items():
            writer.writerow(dict(name=f"worst case eps={pixels.fraction(eps)}", attack="worst_case",
                                 box="", eps=eps, eps_255=eps * 255, steps="", restarts="",
                                 step_size="", accuracy=accuracy))


# The files an evaluation writes into its directory.
JSON, CSV, FIGURE = "evaluation.json", "evaluation.csv", "accuracy_vs_iterations.png"
OUTPUTS = (JSON, CSV, FIGURE)


def _curves(report):
    """PGD accuracy against iterations, per eps and box, where there are two counts or more."""
    curves = {}
    for spec in report.specs:
        if spec.attack == "pgd":
            label = f"eps {pixels.fraction(spec.eps)} {spec.box}-box"
            curves.setdefault(label, []).append((spec.steps, report.accuracy(spec)))
    return {k: v for k, v in curves.items() if len(v) > 1}


@dataclasses.dataclass
class Evaluation:
    """What a robustness evaluation found: per attack and per example (``report``, an
    ``outcomes.Report``), and the checks that flag a figure which may overstate robustness.

    ``worst_case`` is the figure to quote: per eps, the share of examples that every attack
    at that eps failed on.
    """

    report: Report
    checks: list
    context: dict = dataclasses.field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        return self.report.clean_accuracy

    @property
    def accuracy(self) -> dict:
        """``{attack name: robust accuracy}``, in the plan's order."""
        return {spec.name: self.report.accuracy(spec) for spec in self.report.specs}

    @property
    def worst_case(self) -> dict:
        """``{eps: accuracy}``: robust only where every attack at that eps failed."""
        return {eps: accuracy for eps, (accuracy, _) in self.report.worst_case().items()}

    @property
    def warnings(self) -> list:
        """Names of the checks that fired: reasons to distrust the figures until looked into."""
        return [check.name for check in self.checks if check.fired]

    def examples(self) -> list:
        """Per example: label, clean outcome, and per eps its outcome and what broke it."""
        return self.report.examples()

    def to_json(self) -> dict:
        """The values ``evaluation.json`` holds (JSON types only)."""
        return to_json(self.report, self.checks, **self.context)

    def table(self, title="") -> str:
        return "\n".join(table(self.report, self.checks, title))

    def __str__(self):
        return self.table()

    def write(self, out_dir, figure=True, log=print):
        """Writes ``evaluation.json``, ``evaluation.csv`` and, with ``figure`` and matplotlib,
        ``accuracy_vs_iterations.png`` to ``out_dir``, each whole, under the lock of the run
        ``out_dir`` is in (recorded in its manifest); returns the names written."""
        with writing_into(out_dir, "atalp_tf.evaluate"):
            os.makedirs(out_dir, exist_ok=True)
            atomic.write_json(os.path.join(out_dir, JSON), self.to_json())
            write_csv(os.path.join(out_dir, CSV), self.report)
            written = [JSON, CSV]
            curves = _curves(self.report) if figure else {}
            if curves:
                try:
                    with atomic.replacing(os.path.join(out_dir, FIGURE)) as temporary:
                        plots.accuracy_curves(temporary, curves, self.report.clean_accuracy)
                    written.append(FIGURE)
                except ImportError as error:
                    log(f"No PNG written: {error}")
        return written


def run(target, batches, specs, *, source=None, seed=0, num_classes=None, num_batches=None, context=None,
        log=None, eot_samples=None):
    """Evaluates ``specs`` (``robustness.evaluate``, the arguments as there) and runs the checks."""
    report = robustness.evaluate(
        target, batches, specs, source=source, seed=seed, num_classes=num_classes, log=log,
        num_batches=num_batches, eot_samples=eot_samples,
    )
    return Evaluation(report, robustness_checks.run_checks(report), dict(context or {}))


def evaluate_into(out_dir, target, batches, specs, *, source=None, seed=0, num_classes=None,
                  num_batches=None, title="", context=None, log=print, figure=True, eot_samples=None):
    """``run``, then logs the table and writes the files to ``out_dir`` (``Evaluation.write``).
    Returns ``(report, checks, json values, names written)``."""
    evaluation = run(target, batches, specs, source=source, seed=seed, num_classes=num_classes,
                     num_batches=num_batches, context=context, log=log, eot_samples=eot_samples)
    for line in table(evaluation.report, evaluation.checks, title):
        log(line)
    written = evaluation.write(out_dir, figure=figure, log=log)
    return evaluation.report, evaluation.checks, evaluation.to_json(), written
