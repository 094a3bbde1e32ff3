"""Runs a suite (``atalp_tf.reproduction.suites``): trains every model, evaluates each, writes the table.

``out_dir`` holds one training ``model_dir`` per method (and ``source/`` for the black-box
model), each with its ``evaluation/``, plus:

* ``settings.json``: the suite exactly as run (data, training and attack settings, seeds);
* ``table.md`` and ``table.csv``: the table in the paper's shape, for the last epoch's model
  and for the best validation epoch's (each model_dir's ``evaluation/`` and
  ``evaluation_best/``; a run whose best epoch was its last holds the same weights twice, so
  its best row repeats the last's figures and it has no ``evaluation_best/``);
* ``timing.json``: training hours per model (summed over the sessions of a resumed run);
* ``accuracy_vs_iterations.png`` for transfer tables, with matplotlib (the paper's Figure 3).

A suite stopped at any point and started again skips what is done: a finished training run
(its ``results.json``) and a finished evaluation (its ``evaluation.json``); an interrupted
training run resumes from its checkpoint (``atalp_tf.training.trainer``).
"""

import dataclasses
import json
import os
import time

import numpy as np

from atalp_tf import datasets
from atalp_tf import pixels
from atalp_tf import plots
from atalp_tf.attacks.pgd import PGDConfig
from atalp_tf.attacks.pgd import compile_attack
from atalp_tf.datasets.images import IMAGE_EXTENSIONS
from atalp_tf.errors import MissingPath
from atalp_tf.errors import OutputExists
from atalp_tf.evaluation import plan
from atalp_tf.evaluation import report
from atalp_tf.evaluation import robustness
from atalp_tf.inspection import maps
from atalp_tf.runs.loading import first_examples
from atalp_tf.runs.loading import load_classifier
from atalp_tf.runs.loading import model_shape
from atalp_tf.runs.rundir import RunDir
from atalp_tf.training import trainer
from atalp_tf.training.config import TrainConfig


def _jsonable(suite):
    values = dataclasses.asdict(suite)
    return json.loads(json.dumps(values, default=list))


def train_config(suite, name, out_dir, data_overrides=None):
    """The ``TrainConfig`` of one model of the suite (``name``: a method or ``source``)."""
    values = dict(suite.train)
    if name == "source":
        values.update(suite.source)
    else:
        values.update(suite.method_settings.get(name, {}), method=name)
    data = datasets.DataConfig(**dict(suite.data, **(data_overrides or {})))
    # The tables need model.keras only; a SavedModel per model would cost minutes at ResNet-101
    # size (atalp_tf.runs.export.export_serving makes one later from the loaded model.keras).
    return TrainConfig.from_flat(model_dir=os.path.join(out_dir, name), data=data, verbose=2, export=False, **values)


def _plan(suite, transfer, num_classes):
    e = suite.evaluation
    return plan.plan(
        e.eps, e.steps, e.attacks, restarts=e.restarts, step_size=e.step_size, queries=e.queries,
        num_targets=e.num_targets, transfer=transfer, num_classes=num_classes,
        autoattack_budget=e.autoattack_budget,
    )


def _train(config, timing, name, log):
    if RunDir(config.model_dir).results() is not None:
        log(f"[{name}] trained already: {config.model_dir}")
        return
    log(f"[{name}] training in {config.model_dir}")
    started = time.time()
    try:
        trainer.run(config, log=log)
    finally:
        timing[name] = timing.get(name, 0.0) + (time.time() - started) / 3600


def _evaluate(suite, config, source_file, log, checkpoint="last", last=None):
    """One model's evaluation at its last epoch (model.keras) or its best validation epoch
    (checkpoints/best.keras; Rice et al.: robust overfitting can put several points between
    them), into the run's ``evaluation/`` or ``evaluation_best/``. ``last``: the last epoch's
    evaluation, which stands for the best epoch's when the run found their weights equal."""
    run = RunDir(config.model_dir)
    out = run.evaluation_dir(checkpoint)
    path = os.path.join(out, report.JSON)
    name = f"{config.objective.method}, {checkpoint} epoch"
    if os.path.isfile(path):
        log(f"[{name}] evaluated already: {path}")
        with open(path) as f:
            return json.load(f)
    if last is not None and (run.results() or {}).get("best_is_last"):
        # Same weights and the same seeded attacks: the figures could only repeat the last's.
        log(f"[{name}] the best epoch was the last (the same weights): its figures are the last epoch's")
        return last
    data = datasets.load(dataclasses.replace(config.data, batch_size=suite.evaluation.batch_size),
                         saved_split=run.file(RunDir.SPLIT))
    model_file = run.model_file("final" if checkpoint == "last" else checkpoint)
    model = load_classifier(model_file, num_classes=data.num_classes, image_shape=data.image_shape)
    source = load_classifier(source_file) if source_file else None
    specs = _plan(suite, source is not None, data.num_classes)
    batches, num_batches = first_examples(
        data.test, min(suite.evaluation.num_examples, data.sizes["test"]), suite.evaluation.batch_size
    )
    log(f"[{name}] evaluating {len(specs)} attacks")
    _, _, values, _ = report.evaluate_into(
        out, robustness.logits_of(model), batches, specs,
        source=robustness.logits_of(source) if source is not None else None, seed=config.seed,
        num_classes=data.num_classes, num_batches=num_batches,
        title=f"{suite.name} / {name}", context=dict(model=model_file, source_model=source_file),
        log=log, figure=False,
    )
    return values


def _columns(suite, evaluation):
    """``{column: accuracy}`` of one method, in the paper's shape."""
    columns = {"clean": evaluation["clean_accuracy"]}
    attacks = evaluation["attacks"]
    if suite.table == "robustness":
        for a in attacks:
            columns[a["name"].split(" eps=")[0]] = a["accuracy"]
        for w in evaluation["worst_case"]:
            columns["worst case"] = w["accuracy"]
        return columns
    longest = max(a["steps"] for a in attacks)
    for box in ("gray", "black"):
        for a in attacks:
            if a["box"] == box and a["steps"] == longest:
                columns[f"{box}-box eps={pixels.fraction(a['eps'])}"] = a["accuracy"]
    return columns


_SECTION_TITLES = {
    "last": f"Last epoch ({RunDir.MODEL})",
    "best": f"Best epoch ({RunDir.MODELS['best']}, by validation PGD accuracy)",
}


def write_table(suite, out_dir, rows, timing):
    """``table.md`` and ``table.csv`` from ``{checkpoint: {method: evaluation json}}``: one
    table per checkpoint, the last epoch's first."""
    sections = {}
    for checkpoint, evaluations in rows.items():
        columns = {m: _columns(suite, e) for m, e in evaluations.items()}
        if suite.table == "robustness":
            for method in columns:
                columns[method]["training hours"] = timing.get(method, float("nan"))
        sections[checkpoint] = columns
    n = next(iter(rows["last"].values()))["num_examples"]
    return _write(suite, out_dir, sections, f"{n} test examples per method; settings and seeds in settings.json.")


def _write(suite, out_dir, sections, footer):
    """``sections``: ``{checkpoint: {method: {column: value}}}``."""
    header = list(next(iter(next(iter(sections.values())).values())))
    lines = [f"# {suite.description}"]
    for checkpoint, columns in sections.items():
        if len(sections) > 1:
            lines += ["", f"## {_SECTION_TITLES[checkpoint]}"]
        lines += ["", "| method | " + " | ".join(header) + " |", "| --- " * (len(header) + 1) + "|"]
        for method, values in columns.items():
            cells = [f"{values.get(h, float('nan')):.4f}" if h != "training hours" else f"{values[h]:.2f}"
                     for h in header]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", footer]
    if suite.notes:
        lines += ["", suite.notes]
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "table.csv"), "w") as f:
        f.write("method,checkpoint," + ",".join(header) + "\n")
        for checkpoint, columns in sections.items():
            for method, values in columns.items():
                cells = ",".join(f"{values.get(h, float('nan')):.6g}" for h in header)
                f.write(f"{method},{checkpoint},{cells}\n")
    return lines


def _figure(out_dir, rows):
    panels = {}
    for method, evaluation in rows.items():
        for a in evaluation["attacks"]:
            if a["attack"] == "pgd":
                curves = panels.setdefault(f"eps {pixels.fraction(a['eps'])}", {})
                curves.setdefault(f"{method} {a['box']}-box", []).append((a["steps"], a["accuracy"]))
    try:
        plots.accuracy_panels(os.path.join(out_dir, "accuracy_vs_iterations.png"), panels)
    except ImportError as error:
        return str(error)
    return None


def part_images(data_dir, mask_dir, max_images):
    """``(image, mask)`` paths of the image files under ``data_dir`` that have a mask in
    ``mask_dir``, sorted, at most ``max_images``."""
    if not mask_dir or not os.path.isdir(mask_dir):
        raise MissingPath(
            f"Table 3 needs a folder of part masks (`mask_dir`), named like the images; got {mask_dir!r}"
        )
    if not data_dir or not os.path.isdir(data_dir):
        raise MissingPath(f"Table 3 reads its images from `data_dir`; got {data_dir!r}")
    stems = {os.path.splitext(n)[0] for n in os.listdir(mask_dir) if n.lower().endswith(IMAGE_EXTENSIONS)}
    paths = []
    for root, _, files in os.walk(data_dir):
        if os.path.abspath(root).startswith(os.path.abspath(mask_dir)):
            continue
        paths += [os.path.join(root, n) for n in files
                  if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.splitext(n)[0] in stems]
    if not paths:
        raise MissingPath(
            f"No image under {data_dir} has a mask in {mask_dir}: a mask must be named like its "
            "image (image_0001.jpg -> image_0001.png)"
        )
    return [(path, maps.find_mask(path, mask_dir)) for path in sorted(paths)[:max_images]]


def _parts_row(suite, config, pairs, out_dir, log):
    """``{stage: {"clean": share, "adv": share}}`` of one model, cached in ``out_dir/parts``."""
    method = config.objective.method
    path = os.path.join(out_dir, "parts", f"{method}.json")
    if os.path.isfile(path):
        log(f"[{method}] part activation measured already: {path}")
        with open(path) as f:
            return json.load(f)
    model = load_classifier(RunDir(config.model_dir).model_file())
    _, shape = model_shape(model)
    p = suite.parts
    attack = compile_attack(lambda z: model(z, training=False), PGDConfig(p.eps, p.step_size, p.steps),
                            seed=config.seed)
    log(f"[{method}] part activation on {len(pairs)} images")
    images = np.stack([maps.load_image(image, shape) for image, _ in pairs])
    masks = np.stack([maps.load_mask(mask, shape[0]) for _, mask in pairs])
    # Adversarial images move away from the model's own clean prediction (no labels needed).
    predicted = np.argmax(model.predict(images, batch_size=32, verbose=0), -1).astype("int32")
    values = {"images": len(pairs), "mask_area": float(masks.mean()),
              "stages": maps.part_shares(model, images, masks, predicted, attack), "model": config.model_dir}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(values, f, indent=2)
    return values


def write_parts_table(suite, out_dir, rows):
    columns = {
        method: {f"{stage} {kind}": share for stage, kinds in row["stages"].items() for kind, share in kinds.items()}
        for method, row in rows.items()
    }
    first = next(iter(rows.values()))
    footer = (f"{first['images']} images with masks; the masks cover {first['mask_area']:.1%} of them on "
              "average (the share an attention map blind to the parts would get).")
    return _write(suite, out_dir, {"last": columns}, footer)


def run_suite(suite, out_dir, *, data_overrides=None, log=print, mask_dir=None, models_from=None, weights=None):
    """Trains and evaluates every model of ``suite`` in ``out_dir``; returns the table's lines.

    ``models_from``: a directory holding the suite's trained models (Table 3 reads those of
    ``table2-flowers17``); ``mask_dir``: Table 3's part masks; ``weights``: a local ImageNet
    weights file for the fine-tuning suites, instead of the download.
    """
    if weights:
        suite = dataclasses.replace(suite, train=dict(suite.train, weights=weights))
    os.makedirs(out_dir, exist_ok=True)
    settings_path = os.path.join(out_dir, "settings.json")
    settings = dict(_jsonable(suite), data_overrides=data_overrides or {})
    if os.path.isfile(settings_path):
        with open(settings_path) as f:
            if json.load(f) != settings:
                raise OutputExists(
                    f"{out_dir} holds a run of other settings (settings.json); choose another `out_dir`"
                )
    with open(settings_path, "w") as f:
        json.dump(settings, f, indent=2)
    timing_path = os.path.join(out_dir, "timing.json")
    timing = {}
    if os.path.isfile(timing_path):
        with open(timing_path) as f:
            timing = json.load(f)

    def save_timing():
        with open(timing_path, "w") as f:
            json.dump(timing, f, indent=2)

    names = (["source"] if suite.source else []) + list(suite.methods)
    pairs = None
    if suite.table == "parts":  # before any training: a missing mask folder is found at once
        data_dir = (data_overrides or {}).get("data_dir") or suite.data.get("data_dir")
        pairs = part_images(data_dir, mask_dir, suite.parts.max_images)
    configs = {n: train_config(suite, n, models_from or out_dir, data_overrides) for n in names}
    for name in names:
        try:
            _train(configs[name], timing, name, log)
        finally:
            save_timing()
    if suite.table == "parts":
        rows = {m: _parts_row(suite, configs[m], pairs, out_dir, log) for m in suite.methods}
        return write_parts_table(suite, out_dir, rows)
    source_file = RunDir(configs["source"].model_dir).model_file() if suite.source else None
    rows = {"last": {m: _evaluate(suite, configs[m], source_file, log) for m in suite.methods}}
    rows["best"] = {m: _evaluate(suite, configs[m], source_file, log, "best", rows["last"][m]) for m in suite.methods}
    lines = write_table(suite, out_dir, rows, timing)
    if suite.table == "transfer":
        problem = _figure(out_dir, rows["last"])
        if problem:
            log(f"No figure: {problem}")
    return lines
