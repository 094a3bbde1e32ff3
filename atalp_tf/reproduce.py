r"""Reproduce one of the paper's tables: ``python -m atalp_tf.reproduce --suite=NAME``.

Trains every method of the table (and the black-box source model), evaluates each with the
table's attacks, and writes ``table.md``, ``table.csv`` and ``settings.json`` to ``--out_dir``
(default ``runs/reproduce/NAME``). Stopped and started again, it skips what is done.
Suites (``atalp_tf.reproduction.suites``): table1, table2-flowers17, table2-imagenet4, table2-dogs-vs-cats
(GPU), table3 (attention on the flowers' parts, from table2-flowers17's models and a folder of
part masks: ``--models_from=runs/reproduce/table2-flowers17 --mask_dir=DIR``) and cpu-flowers
(a scaled-down Table 2 for a 2-core CPU).
"""

import os
import time

from absl import app
from absl import flags

from atalp_tf import choices
from atalp_tf import cli

_SUITE = flags.DEFINE_enum("suite", None, choices.SUITE_NAMES, "The table to reproduce.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the runs and the table go (default runs/reproduce/SUITE).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the suite's dataset lives (flowers17, folder, tfds).")
_WEIGHTS = flags.DEFINE_string("weights", None, "For table2: ImageNet weights file instead of the download.")
_MASK_DIR = flags.DEFINE_string("mask_dir", None, "For table3: part masks named like the images (white on the parts).")
_MODELS_FROM = flags.DEFINE_string(
    "models_from", None,
    "For table3: the directory of a table2-flowers17 run whose models to read (else they are trained).",
)


@flags.multi_flags_validator(
    ["suite", "mask_dir"], "--suite=table3 needs --mask_dir, an existing folder of part masks"
)
def _check_mask_dir(values):
    return values["suite"] != "table3" or bool(values["mask_dir"] and os.path.isdir(values["mask_dir"]))


cli.require_existing("models_from", "directory", "be an existing directory")
cli.require_existing("data_dir", "directory", "be an existing directory")


def _reproduce(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from atalp_tf.reproduction import runner
    from atalp_tf.reproduction.suites import SUITES

    out_dir = _OUT_DIR.value or os.path.join("runs", "reproduce", _SUITE.value)
    started = time.time()
    lines = runner.run_suite(
        SUITES[_SUITE.value], out_dir, data_overrides={"data_dir": _DATA_DIR.value} if _DATA_DIR.value else None,
        mask_dir=_MASK_DIR.value, models_from=_MODELS_FROM.value, weights=_WEIGHTS.value, log=cli.log,
    )
    print("\n".join(lines))
    print(f"\nWrote {out_dir}/table.md and table.csv in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    app.run(cli.command("atalp_tf.reproduce", _reproduce, __doc__))
