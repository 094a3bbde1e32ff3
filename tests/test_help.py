"""Every command's --help and --helpfull list each of its flags once, defaults as written."""

import os
import re
import subprocess
import sys

import pytest
from support import PATIENCE
from support import REPO

# Runs the package in other processes.
pytestmark = pytest.mark.slow

COMMANDS = ("train", "evaluate", "visualize", "reproduce")


def _help(command, which):
    result = subprocess.run([sys.executable, "-m", f"atalp_tf.{command}", which], capture_output=True,
                            text=True, cwd=REPO, timeout=PATIENCE)
    # absl's --helpfull exits with 1, as it always has; ours (--help) with 0.
    assert result.returncode == (0 if which == "--help" else 1), result.stderr[-2000:]
    return result.stdout


def _listed(text):
    return re.findall(r"^  --\[?(?:no\]?)?([a-z_0-9]+)\b", text, flags=re.MULTILINE)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_of_a_command_is_listed_once_in_help_and_helpfull(command):
    grouped = _listed(_help(command, "--help"))
    assert grouped and len(grouped) == len(set(grouped)), grouped
    full = _help(command, "--helpfull")
    listed = _listed(full)
    for name in grouped:
        assert listed.count(name) == 1, (name, listed.count(name))
    # The command's own section of --helpfull holds exactly the flags --help groups.
    own = full.split(f"atalp_tf{os.sep}{command}.py:\n", 1)[1].split("\nabsl.", 1)[0]
    assert sorted(_listed(own)) == sorted(grouped)


@pytest.mark.parametrize("command, flag, default", [
    ("train", "eps", "8/255"), ("train", "eval_eps", None), ("evaluate", "step_size", None),
    ("visualize", "radius", "16/255"), ("visualize", "eps", "8/255"),
])
def test_pixel_flags_show_their_defaults_as_fractions(command, flag, default):
    grouped = _help(command, "--help")
    line = next(line for line in grouped.splitlines() if line.startswith(f"  --{flag}"))
    assert (f"(default {default})" in line) if default else "(default" not in line.split(":")[0], line
    if default:
        assert f"(default: '{default}')" in _help(command, "--helpfull")


def test_library_argument_names_read_as_the_commands_flags():
    from absl import flags

    from atalp_tf import cli

    values = flags.FlagValues()
    flags.DEFINE_bool("overwrite", False, "", flag_values=values)
    flags.DEFINE_string("model_dir", None, "", flag_values=values)
    saved, flags.FLAGS = flags.FLAGS, values
    try:
        said = cli.as_flags("`model_dir` runs/x holds a run; pass `overwrite=True`, not `overwrite=False` or `seed`")
    finally:
        flags.FLAGS = saved
    assert said == "--model_dir runs/x holds a run; pass --overwrite, not --nooverwrite or `seed`"
