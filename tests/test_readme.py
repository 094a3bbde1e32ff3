"""The README's library walk-through runs as written."""

import os
import re

import pytest
from support import REPO

# Runs the README's walk-through, training included.
pytestmark = pytest.mark.slow


def _blocks(section):
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    body = text.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_the_library_walk_through_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = _blocks("Library use")
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 -- the README's own code
    # What the walk-through promises: a trained, evaluated, saved and exported model.
    evaluation = namespace["evaluation"]
    assert 0 < evaluation.worst_case[0.1] < evaluation.clean_accuracy
    assert namespace["history"].history["robust_worst_case"]
    assert (tmp_path / "best.keras").is_file() and (tmp_path / "digits_robust.keras").is_file()
    names = (tmp_path / "digits_export" / "assets" / "class_names.txt").read_text().split()
    assert names == [str(digit) for digit in range(10)]
    assert "worst case per example at eps 0.1" in capsys.readouterr().out
    assert (tmp_path / "runs" / "digits" / "results.json").is_file()
    assert namespace["results"]["test_last"]["pgd_accuracy"] < namespace["results"]["test_last"]["clean_accuracy"]
