"""One training run: its configuration, its directory, its stages, and what it leaves behind.

* ``config``: ``TrainConfig``, in groups (data, model, objective, adversary, optimizer, and
  runtime: what may change when a run resumes); ``run_config.json`` keeps its flat form;
* ``rundir``: ``RunDir``, the one place the files of a run directory are named, and the rules
  for claiming one (new, resume, replace);
* ``trainer``: the run in named stages, from a ``TrainConfig`` to checkpoints, logs and results;
* ``callbacks``: what watches a run: checkpoints to resume from, the best epoch, a NaN loss,
  catastrophic overfitting, and the per-epoch progress line;
* ``optimizers``: optimizers and learning-rate schedules;
* ``export``: the serving SavedModel; ``loading``: reading a saved classifier, checked.

Importing the package loads nothing: ``rundir`` needs no TensorFlow, so the command lines
can check a directory before they import it.
"""
