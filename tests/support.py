"""What the tests share besides fixtures: the repository's paths and how long to wait.

A test that waits for another process waits for the event itself (its exit, a file, a line
of its output), bounded by ``PATIENCE``: long enough that a machine busy with other work only
makes the suite slower, never red.
"""

import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOWERS17 = os.path.join(os.path.dirname(REPO), "shared", "datasets", "flowers17")
PATIENCE = 3600  # seconds


def wait_until(condition, what, process=None, limit=PATIENCE):
    """Polls ``condition()`` until it holds; fails naming ``what`` if ``process`` ends first or
    ``limit`` seconds pass."""
    started = time.monotonic()
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}")
        if time.monotonic() - started > limit:
            raise AssertionError(f"{what} did not happen within {limit} s")
        time.sleep(0.05)
