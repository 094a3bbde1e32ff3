"""A robustness evaluation as a terminal table, JSON and CSV (the figure is in ``plots``)."""

import csv
import json

from atalp_tf.robustness import describe_eps

CSV_FIELDS = ("name", "attack", "box", "eps", "eps_255", "steps", "restarts", "step_size", "accuracy")


def table(report, checks, title=""):
    """The lines printed on the terminal: one row per attack, the worst case, the checks."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"clean accuracy {report.clean_accuracy:.4f} on {report.num_examples} examples")
    lines.append(f"  {'attack':<34} {'box':<5} {'eps':>16} {'steps':>6} {'restarts':>8} {'accuracy':>9}")
    for spec in report.specs:
        eps = f"{spec.eps:.4g} ({spec.eps * 255:.3g}/255)"
        lines.append(
            f"  {spec.name:<34} {spec.box:<5} {eps:>16} {spec.steps:>6} {spec.restarts:>8} "
            f"{report.accuracy(spec):>9.4f}"
        )
        if spec.name in report.breakers:
            steps = ", ".join(f"{n} {a:.4f}" for n, a in report.after_each_component(spec).items())
            lines.append(f"    accuracy after each of its attacks: {steps}")
    for eps, (accuracy, names) in report.worst_case().items():
        lines.append(
            f"  worst case per example at eps {eps:.4g} ({eps * 255:.3g}/255): {accuracy:.4f} "
            f"over {len(names)} attacks"
        )
    fired = [c for c in checks if c.fired]
    lines.append(f"checks: {len(fired)} of {len(checks)} fired")
    for check in checks:
        lines.append(f"  [{'WARNING' if check.fired else 'ok'}] {check.name}: {check.detail}")
        if check.fired:
            lines.append(f"      what to do: {check.advice}")
    return lines


def to_json(report, checks, **context):
    values = dict(context)
    values.update(report.to_dict())
    values["checks"] = [c.to_dict() for c in checks]
    values["warnings"] = [c.name for c in checks if c.fired]
    return values


def write_json(path, report, checks, **context):
    with open(path, "w") as f:
        json.dump(to_json(report, checks, **context), f, indent=2)


def write_csv(path, report):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerow(dict(name="clean", attack="none", box="", eps=0, eps_255=0, steps=0,
                             restarts=0, step_size=0, accuracy=report.clean_accuracy))
        for spec in report.specs:
            writer.writerow(dict(spec.to_dict(), accuracy=report.accuracy(spec)))
        for eps, (accuracy, names) in report.worst_case().items():
            writer.writerow(dict(name=f"worst case eps={describe_eps(eps)}", attack="worst_case",
                                 box="", eps=eps, eps_255=eps * 255, steps="", restarts="",
                                 step_size="", accuracy=accuracy))
