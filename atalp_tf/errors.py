"""The mistakes a user can make, as one family of exceptions the command lines report.

A ``UserError`` comes from the user's flags, files, data or machine (a missing folder, a
weights file of another network, no network for a download, a run directory in use). Its
message names the flag or file, says what was expected and what to do, in one paragraph; the
command lines print it as ``atalp_tf.<command>: error: <message>`` without a traceback. Any
other exception is a bug of ours and keeps its traceback.

Each class also derives from the built-in exception it refines, so library callers that catch
``ValueError`` or ``FileNotFoundError`` keep working.
"""


class Advice(UserWarning):
    """Something the user should know or reconsider (a step far above eps, a class too small
    for every split, a collapse of robust accuracy); the command lines show it as one line."""


class UserError(Exception):
    """A problem with what the user gave or has; the message says what to do."""


class DataError(UserError, ValueError):
    """The data cannot be used as asked: empty classes, too few images, a split that does not
    fit, a download that cannot be made."""


class MissingPath(UserError, FileNotFoundError):
    """A file or folder the user named (or that a run should hold) is not there."""


class OutputExists(UserError, FileExistsError):
    """Writing would replace something the user has, and they did not ask for that."""


class DamagedFile(UserError, ValueError):
    """A file the package wrote that cannot be read back: truncated, garbled or of another format."""


class ModelFileError(UserError, ValueError):
    """A model file that cannot be loaded, or not as the caller needs it."""


class WeightsError(UserError, ValueError):
    """Pretrained weights that cannot be had (no network) or do not fit the network."""


class Interrupted(UserError):
    """The user stopped a command (Ctrl-C); the message says what was kept and how to go on."""
