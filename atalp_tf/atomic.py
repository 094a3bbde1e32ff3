"""Writing files so that a kill, a full disk or a Ctrl-C never leaves half of one.

Every file the package writes into a run goes first to a temporary name in the same directory
(``.NAME.atalp-tmp-PID.EXT``, so that Keras still sees a ``.keras`` name), is flushed to disk,
and is then renamed over its target: a reader finds the old file or the new one, never a part.
Keras writes ``.keras`` archives in place and a SavedModel is a directory of files, so both are
written under a temporary name the same way (``replacing``). A temporary left by a killed
process carries the mark, so the next run knows it as its own and removes it
(``remove_temporaries``).

``stop_point(name)`` marks the moments a run can be stopped at for the fault-injection tests:
with ``ATALP_TF_STOP_AT=NAME`` (or ``NAME#K`` for its K-th time) the process ends at once, as a
kill would, without unwinding; ``stop_hook`` does the same in-process. ``STOP_POINTS`` lists
them.

This module needs no TensorFlow.
"""

import collections
import contextlib
import errno
import json
import os
import shutil

from atalp_tf.errors import DamagedFile

TEMP_MARK = ".atalp-tmp-"
STOP_ENV = "ATALP_TF_STOP_AT"
STOPPED_EXIT = 75  # the exit status of a process stopped at a stop point
# Where a run can be stopped, in the order a run passes them ("write X": X is written under
# its temporary name, not yet renamed).
STOP_POINTS = (
    "imports", "claimed", "write run_config.json", "write split.json", "batch", "write checkpoint",
    "write last.keras", "write best.keras", "epoch end", "test", "write model.keras", "write export",
    "write results.json",
)
stop_hook = None  # a callable of the point's name, called at every stop point (tests)
_passed = collections.Counter()


def stop_point(name):
    """Ends the process here if ``ATALP_TF_STOP_AT`` names this point (see the module's docstring)."""
    if stop_hook is not None:
        stop_hook(name)
    wanted = os.environ.get(STOP_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition("#")
    if point == name:
        _passed[name] += 1
        if _passed[name] == int(count or 1):
            os._exit(STOPPED_EXIT)


def temporary_name(path):
    """The temporary name ``path`` is written under: hidden, marked, of this process, same extension."""
    folder, base = os.path.split(path)
    stem, extension = os.path.splitext(base)
    return os.path.join(folder, f".{stem}{TEMP_MARK}{os.getpid()}{extension}")


def is_temporary(name):
    return TEMP_MARK in name


def _sync(path):
    """Flushes ``path`` (a file, or every file of a directory) and its directory to disk."""
    paths = [path]
    if os.path.isdir(path):
        paths = [os.path.join(folder, n) for folder, _, names in os.walk(path) for n in names] + [path]
    for each in paths + [os.path.dirname(os.path.abspath(path))]:
        try:
            descriptor = os.open(each, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(descriptor)
        except OSError:
            pass  # some file systems cannot sync a directory; the rename is still atomic
        finally:
            os.close(descriptor)


def remove(path):
    """Removes a file or a directory tree, if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def replacing(path, point=None):
    """Yields the temporary name to write ``path`` under; once the block ends, puts it in
    place by one rename (a directory replaces an old one of ours at ``path``).

    An error in the block (a full disk, say) removes the temporary and leaves ``path`` as it
    was. An interruption (Ctrl-C, or the end of the process) leaves the temporary for the next
    run to remove. ``point``: the stop point passed between writing and renaming (default
    ``"write NAME"``).
    """
    temporary = temporary_name(path)
    remove(temporary)
    try:
        yield temporary
        if not os.path.exists(temporary):
            raise FileNotFoundError(errno.ENOENT, "nothing was written", temporary)
        _sync(temporary)
    except Exception:
        remove(temporary)
        raise
    stop_point(point or f"write {os.path.basename(path)}")
    if os.path.isdir(temporary) and os.path.isdir(path):
        remove(path)
    os.replace(temporary, path)
    _sync(os.path.dirname(os.path.abspath(path)))


def write_text(path, text):
    with replacing(path) as temporary:
        with open(temporary, "w") as f:
            f.write(text)


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path, what, advice):
    """The JSON in ``path``; a truncated or garbled file raises ``DamagedFile`` saying that it
    holds ``what`` and, as ``advice``, what to do."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = str(error).split(":")[0]
        raise DamagedFile(
            f"{path} is damaged ({reason}): it should hold {what}, written by atalp_tf. {advice}"
        ) from None


def remove_temporaries(directory):
    """Removes the marked temporaries that interrupted writes left in ``directory`` and its
    folders; returns their paths."""
    removed = []
    for folder, names, files in os.walk(directory):
        for name in [n for n in names + files if is_temporary(n)]:
            remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
        names[:] = [n for n in names if not is_temporary(n)]
    return removed


# What the operating system can refuse a write with, and what a user can do about it.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space there (or choose another directory)",
    errno.EDQUOT: "the disk quota is used up: free some space there (or choose another directory)",
    errno.EACCES: "permission denied: choose a directory you can write to",
    errno.EPERM: "operation not permitted: choose a directory you can write to",
    errno.EROFS: "the file system is read-only: choose a directory you can write to",
}


def os_error_message(error):
    """One paragraph for an ``OSError`` a user can fix (full disk, no permission), or None."""
    advice = _OS_ADVICE.get(error.errno)
    if advice is None:
        return None
    where = error.filename or "a file"
    return (
        f"Could not write {where}: {advice}. What was written before is kept (files are replaced "
        "only once written whole); run the same command again to go on from it"
    )
