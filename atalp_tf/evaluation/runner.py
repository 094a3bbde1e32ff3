"""Evaluating a model a user points at: the work behind ``python -m atalp_tf.evaluate``.

``evaluate_path`` finds the model (a ``.keras`` file, a run's directory or its export), its
data (the run's own test split unless another dataset is named) and its eps (the eps the run
trained at unless given), builds the plan, and evaluates into a directory with
``report.evaluate_into``, the same function the reproduce suites use.
"""

import os

from atalp_tf import pixels
from atalp_tf.choices import DEFAULT_ATTACKS
from atalp_tf.errors import MissingPath
from atalp_tf.errors import OutputExists
from atalp_tf.errors import UserError
from atalp_tf.evaluation import plan
from atalp_tf.evaluation import report
from atalp_tf.evaluation import robustness
from atalp_tf.runs.loading import check_classifier
from atalp_tf.runs.loading import first_examples
from atalp_tf.runs.loading import load_classifier
from atalp_tf.runs.loading import model_shape
from atalp_tf.runs.rundir import RunDir
from atalp_tf.runs.rundir import locate
from atalp_tf.runs.rundir import writing_into

# Without a run to take it from, the evaluation's eps is the paper's CIFAR-10 one.
DEFAULT_EPS = 8 / 255


def evaluation_data(located, image_shape, *, dataset=None, data_dir=None, image_size=None, split="test",
                    num_examples=500, batch_size=100):
    """``(DataConfig, Splits, batches, number of batches)`` to evaluate ``located``'s model on:
    ``dataset`` when given, else the run's own data and split."""
    from atalp_tf import datasets

    overrides = dict(batch_size=batch_size, image_size=image_size or image_shape[0])
    if dataset:
        config = datasets.DataConfig(name=dataset, data_dir=data_dir, **overrides)
    elif located.run_dir:
        config = RunDir(located.run_dir).data_config(data_dir=data_dir, **overrides)
    else:
        raise MissingPath(f"{located.model_file} is not inside a training model_dir: name the data with --dataset")
    data = datasets.load(config)
    part = data.test if split == "test" else data.val
    return (config, data, *first_examples(part, min(num_examples, data.sizes[split]), batch_size))


def evaluate_path(model_path, *, checkpoint="final", out_dir=None, overwrite=False, eps=None, steps=(10, 20, 50),
                  attacks=None, restarts=1, step_size=None, queries=1000, num_targets=9, seed=0,
                  source_path=None, source_checkpoint="final", dataset=None, data_dir=None, image_size=None,
                  split="test", num_examples=500, batch_size=100, bpda=(), eot_samples=None, log=print):
    """Evaluates the model ``model_path`` names into ``out_dir`` (default the run's
    ``evaluation/``); returns the names written. Refuses to replace an earlier evaluation
    unless ``overwrite``. ``eot_samples``: draws a randomised model is averaged over (None: 20
    when its outputs are random, 1: never)."""
    located = locate(model_path, checkpoint)
    if not out_dir and located.run_dir is None:
        raise UserError("--out_dir is needed when --model is not inside a training model_dir")
    out_dir = out_dir or RunDir(located.run_dir).evaluation_dir()
    # A run's evaluation is written under its lock, held from the start: a run still
    # training there is not evaluated half-way.
    with writing_into(out_dir, "atalp_tf.evaluate"):
        existing = [n for n in report.OUTPUTS if os.path.exists(os.path.join(out_dir, n))]
        if existing and not overwrite:
            raise OutputExists(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite or another --out_dir")
        trained_at = RunDir(located.run_dir).training_eps() if located.run_dir else None
        if not eps:
            eps = [trained_at or DEFAULT_EPS]
            reason = "the eps the run trained at" if trained_at else "no run to take it from"
            log(f"eps {pixels.both(eps[0])} ({reason}; --eps sets others)")
        model = robustness.straight_through(load_classifier(located.model_file), bpda)
        _, image_shape = model_shape(model)
        data_config, data, batches, num_batches = evaluation_data(
            located, image_shape, dataset=dataset, data_dir=data_dir, image_size=image_size, split=split,
            num_examples=num_examples, batch_size=batch_size,
        )
        check_classifier(model, located.model_file, num_classes=data.num_classes, image_shape=data.image_shape)
        source = source_file = None
        if source_path:
            source_file = locate(source_path, source_checkpoint).model_file
            source = load_classifier(source_file, num_classes=data.num_classes, image_shape=data.image_shape)
        specs = plan.plan(
            eps, sorted(set(steps)), attacks or DEFAULT_ATTACKS, restarts=restarts, step_size=step_size,
            queries=queries, num_targets=num_targets, transfer=source is not None, num_classes=data.num_classes,
        )
        context = dict(
            model=located.model_file, source_model=source_file, dataset=data_config.name, split=split, seed=seed,
            pixel_range=[0.0, 1.0], class_names=list(data.class_names),
        )
        title = f"model {located.model_file}" + (f", black-box source {source_file}" if source_file else "")
        *_, written = report.evaluate_into(
            out_dir, robustness.logits_of(model), batches, specs,
            source=robustness.logits_of(source) if source is not None else None, seed=seed,
            num_classes=data.num_classes, num_batches=num_batches, title=title, context=context, log=log,
            eot_samples=eot_samples,
        )
        return [os.path.join(out_dir, name) for name in written]
