r"""Reproduce one of the paper's tables: ``python -m atalp_tf.reproduce --suite=NAME``.

Trains every method of the table (and the black-box source model), evaluates each with the
table's attacks, and writes ``table.md``, ``table.csv`` and ``settings.json`` to ``--out_dir``
(default ``runs/reproduce/NAME``). Stopped and started again, it skips what is done.
Suites (``atalp_tf.suites``): table1, table2-flowers17, table2-imagenet4, table2-dogs-vs-cats
(GPU), and cpu-flowers (a scaled-down Table 2 for a 2-core CPU). Table 3 comes from the
models of a table2 suite and a folder of part masks: ``python -m atalp_tf.visualize parts``.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

_SUITE_NAMES = ("table1", "table2-flowers17", "table2-imagenet4", "table2-dogs-vs-cats", "cpu-flowers")

_SUITE = flags.DEFINE_enum("suite", None, _SUITE_NAMES, "The table to reproduce.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the runs and the table go (default runs/reproduce/SUITE).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the suite's dataset lives (flowers17, folder, tfds).")
_WEIGHTS = flags.DEFINE_string("weights", None, "For table2: ImageNet weights file instead of the download.")


@flags.validator("data_dir", "--data_dir must be an existing directory")
def _check_data_dir(path):
    return path is None or os.path.isdir(path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines bury the tables
    import dataclasses

    from atalp_tf import reproduction
    from atalp_tf import suites
    from atalp_tf import training
    from atalp_tf.datasets.images import BadImagesError

    suite = suites.SUITES[_SUITE.value]
    if _WEIGHTS.value:
        suite = dataclasses.replace(suite, train=dict(suite.train, weights=_WEIGHTS.value))
    out_dir = _OUT_DIR.value or os.path.join("runs", "reproduce", suite.name)
    overrides = {"data_dir": _DATA_DIR.value} if _DATA_DIR.value else None
    started = time.time()
    try:
        lines = reproduction.run_suite(suite, out_dir, data_overrides=overrides)
    except (training.ModelDirInUse, training.TrainingDiverged, BadImagesError, FileNotFoundError) as error:
        print(f"atalp_tf.reproduce: error: {error}", file=sys.stderr)
        sys.exit(1)
    print("\n".join(lines))
    print(f"\nWrote {out_dir}/table.md and table.csv in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    app.run(main)
