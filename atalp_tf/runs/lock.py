"""One process at a time in a run directory: an exclusive OS file lock.

``RunLock(path, command)`` holds ``flock`` on a run directory's lock file ``path`` while a run
trains, or while an evaluation or a picture writes into it. The kernel releases the lock when
the process ends, however it ends, so a killed run never leaves a stale lock behind; the file
itself stays, holding who took it last (process, time, command), which the refusal of a second
process quotes. On a file system without ``flock`` (some network mounts) the lock is not
available and the run says so once.

This module needs no TensorFlow.
"""

import datetime
import errno
import fcntl
import json
import os
import warnings

from atalp_tf.errors import Advice
from atalp_tf.errors import UserError


class DirectoryInUse(UserError, BlockingIOError):
    """Another process holds the run directory's lock."""


class RunLock:
    _held = set()  # the lock files this process holds (flock conflicts with a second descriptor)

    def __init__(self, path, command):
        self.path = str(path)
        self.directory = os.path.dirname(self.path)
        self.command = command
        self._descriptor = None

    def holder(self):
        """What the lock file says of the process that took it last (a dict), or None."""
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def acquire(self):
        """Takes the lock, or raises ``DirectoryInUse`` naming the process that holds it. A
        process that holds it already takes it again at no cost (an evaluation inside a run)."""
        if os.path.abspath(self.path) in RunLock._held:
            return self
        os.makedirs(self.directory, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise DirectoryInUse(self._refusal()) from None
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            warnings.warn(Advice(
                f"{self.directory} is on a file system without file locks: nothing stops a second "
                "process from writing into it at the same time"
            ), stacklevel=2)
            return self
        self._descriptor = descriptor
        RunLock._held.add(os.path.abspath(self.path))
        note = {"pid": os.getpid(), "since": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": self.command}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(note).encode(), 0)
        return self

    def release(self):
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None
            RunLock._held.discard(os.path.abspath(self.path))

    def held_elsewhere(self):
        """Whether another process holds the lock now (checked by taking it for an instant)."""
        if os.path.abspath(self.path) in RunLock._held or not os.path.exists(self.path):
            return False
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(descriptor)  # closing releases a lock taken here
        return False

    def check(self):
        """Raises ``DirectoryInUse`` if another process holds the lock; takes nothing."""
        if self.held_elsewhere():
            raise DirectoryInUse(self._refusal())

    def _refusal(self):
        held = self.holder() or {}
        who = f"process {held.get('pid', '?')}"
        if held.get("command"):
            who += f" ({held['command']})"
        return (
            f"{self.directory} is in use by {who} since {held.get('since', 'an unknown time')}: "
            "wait for it to finish, stop it, or choose another directory. Nothing was changed"
        )

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
