"""What every command line shares: pixel-valued flags, path checks, grouped help, and the one
preamble.

Only the command-line modules (``train``, ``evaluate``, ``visualize``, ``reproduce``) import
this, and it imports no TensorFlow before the flags are parsed: a mistyped flag fails at once.

The preamble (``command``) quiets TensorFlow's start-up noise (C++ logs, absl warnings,
other libraries' Python warnings) unless ``--verbosity`` is given, importing TensorFlow only
then, shows this package's advice as one line each, and turns a ``UserError`` (or a full disk
or a folder it may not write) into one paragraph on stderr (exit 1), the library's argument
names in it written as the command's flags (``as_flags``), and Ctrl-C into one line
(exit 130). Any other exception is a bug and keeps its traceback.
"""

import os
import re
import sys
import textwrap
import warnings

from absl import flags
from absl import logging

from atalp_tf import atomic
from atalp_tf import pixels
from atalp_tf.errors import Advice
from atalp_tf.errors import Interrupted
from atalp_tf.errors import UserError


class PixelValueParser(flags.ArgumentParser):
    """A perturbation size in the [0, 1] pixel range, as a number or a fraction (``8/255``)."""

    syntactic_help = "a number or fraction in (0, 1], e.g. 8/255 or 0.25"

    def parse(self, argument):
        return pixels.parse(argument)

    def flag_type(self):
        return "pixel value"


class PixelListParser(flags.ArgumentParser):
    """Comma-separated pixel values: ``8/255,16/255``."""

    syntactic_help = "comma-separated numbers or fractions in (0, 1], e.g. 8/255,16/255"

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            items = list(argument)
        else:
            items = [item for item in str(argument).split(",") if item.strip()]
        if not items:
            raise ValueError(f"expected {self.syntactic_help}, got {argument!r}")
        return [pixels.parse(item) for item in items]

    def flag_type(self):
        return "pixel values"


# absl credits a flag to the module that defines it, and --help shows the main module's: the
# flags defined here belong to the command that asked for them.
flags.disclaim_key_flags()


class PixelSerializer(flags.ArgumentSerializer):
    """Pixel values as a user writes them (``8/255``), in ``--helpfull`` and flagfiles."""

    def serialize(self, value):
        values = value if isinstance(value, (list, tuple)) else [value]
        return ",".join(pixels.fraction(v) for v in values)


def DEFINE_pixel_value(name, default, help_text, **kwargs):  # noqa: N802 (absl's naming)
    return flags.DEFINE(PixelValueParser(), name, default, help_text, serializer=PixelSerializer(), **kwargs)


def DEFINE_pixel_list(name, default, help_text, **kwargs):  # noqa: N802 (absl's naming)
    return flags.DEFINE(PixelListParser(), name, default, help_text, serializer=PixelSerializer(), **kwargs)


_DEFINE = {"string": flags.DEFINE_string, "integer": flags.DEFINE_integer, "float": flags.DEFINE_float,
           "bool": flags.DEFINE_bool, "list": flags.DEFINE_list}


def define_options(groups):
    """Defines a flag for each option of ``groups`` (``{group: options}``, options like
    ``training.options.Option``), in order, with its bounds and check; returns the help groups
    (``{group: flag names}``) for ``command``."""
    for options in groups.values():
        for option in options:
            bounds = {key: value for key, value in (("lower_bound", option.lower), ("upper_bound", option.upper))
                      if value is not None}
            if option.kind == "enum":
                flags.DEFINE_enum(option.flag, option.default, option.values, option.help, required=option.required)
            elif option.kind == "pixel":
                DEFINE_pixel_value(option.flag, option.default, option.help, required=option.required)
            else:
                _DEFINE[option.kind](option.flag, option.default, option.help, required=option.required, **bounds)
            if option.check:
                flags.register_validator(option.flag, option.check[0], message=option.check[1])
            if option.exists:
                require_existing(option.flag, *option.exists)
    return {group: [option.flag for option in options] for group, options in groups.items()}


_EXISTS = {"directory": os.path.isdir, "file": os.path.isfile, "path": os.path.exists}


def require_existing(name, kind, requirement, *, required=False):
    """Registers the check that ``--name`` (a path, or a list flag's paths) exists as a
    ``kind`` (directory, file or either: path); its error reads "--name must ``requirement``"."""
    exists = _EXISTS[kind]

    def check(value):
        paths = [] if value is None else value if isinstance(value, list) else [value]
        return (bool(paths) or not required) and all(exists(p) for p in paths)

    flags.register_validator(name, check, message=f"--{name} must {requirement}")


def command_flags():
    """Names of the flags the running command defines, in the order it defines them."""
    return [flag.name for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0])]


def grouped_help(title, groups=None):
    """``--help`` text: ``title``, then each group's flags (all of the command's under "flags"
    when ``groups`` is None) with their defaults as written (``8/255``, not 0.0313725...)."""
    own = command_flags()
    groups = groups or {"flags": own}
    listed = [name for names in groups.values() for name in names]
    unlisted = [name for name in own if name not in listed]
    twice = sorted({name for name in listed if listed.count(name) > 1})
    if unlisted or twice:
        raise AssertionError(f"help groups leave out {unlisted} and list {twice} twice")
    lines = [title.strip(), ""]
    for group, names in groups.items():
        lines.append(f"{group}:")
        for name in names:
            flag = flags.FLAGS[name]
            default = flag.default_unparsed
            if isinstance(default, (list, tuple)):
                default = ",".join(str(d) for d in default)
            shown = "" if default in (None, "", []) else f" (default {default})"
            if isinstance(flag.default, bool):
                shown = f" (default {'true' if flag.default else 'false'})"
            text = f"--{name}{shown}: {flag.help}"
            lines += textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent="      ")
        lines.append("")
    lines.append("--helpfull lists every flag, TensorFlow's included.")
    return "\n".join(lines)


_PROGRAM = ["atalp_tf"]
_SHOW_WARNING = warnings.showwarning
_ARGUMENT = re.compile(r"`([a-z_][a-z0-9_]*)(=[^`]*)?`")


def as_flags(text):
    """``text`` with the library's argument names (```name```, ```name=value```) as this command's
    flags (``--name``, ``--name=value``; ``=True`` and ``=False`` as ``--name`` and ``--noname``);
    names that are not flags of the command stay as they are."""

    def flag(match):
        name, value = match.group(1), match.group(2) or ""
        if name not in flags.FLAGS:
            return match.group(0)
        if value in ("=True", "=False"):
            return f"--{'' if value == '=True' else 'no'}{name}"
        return f"--{name}{value}"

    return _ARGUMENT.sub(flag, str(text))


def log(line):
    """Prints a line of the library's progress as the command line says it (``as_flags``)."""
    print(as_flags(line), flush=True)


def _show_advice(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, Advice):
        print(f"{_PROGRAM[0]}: warning: {as_flags(message)}", file=sys.stderr, flush=True)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


def _import_tensorflow_quietly():
    """Imports TensorFlow and finds its devices with stderr closed at the file level.

    TF 2.21 writes its start-up lines from C++ before its logging is set up, so
    TF_CPP_MIN_LOG_LEVEL does not reach them; an ImportError still surfaces afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def command(program, body, doc, groups=None):
    """``main(argv)`` for ``absl.app.run``: the preamble around ``body(argv)``.

    ``--help`` prints ``doc`` and the command's flags in ``groups`` (``grouped_help``), in
    place of absl's alphabetical list; ``--helpfull`` stays absl's, every flag included.
    """
    if any(arg in ("--help", "-h", "-?") for arg in sys.argv[1:]):
        print(grouped_help(doc, groups))
        sys.exit(0)

    def main(argv):
        _PROGRAM[0] = program
        if not flags.FLAGS["verbosity"].present:
            # TensorFlow's start-up lines (oneDNN, CUDA probing on a machine without a GPU) and
            # other libraries' Python warnings are noise to someone training a model.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            logging.set_verbosity(logging.ERROR)
            warnings.filterwarnings("ignore")
            _import_tensorflow_quietly()
        # Once each: the flags and the classifier they configure may give the same advice.
        warnings.filterwarnings("once", category=Advice)
        warnings.showwarning = _show_advice
        try:
            return body(argv)
        except Interrupted as error:
            print(f"\n{program}: {error}", file=sys.stderr)
            sys.exit(130)
        except KeyboardInterrupt:
            print(f"\n{program}: interrupted", file=sys.stderr)
            sys.exit(130)
        except UserError as error:
            print(f"{program}: error: {as_flags(error)}", file=sys.stderr)
            sys.exit(1)
        except OSError as error:
            # A full disk or a folder without permission is the machine's, not a bug of ours.
            message = atomic.os_error_message(error)
            if message is None:
                raise
            print(f"{program}: error: {as_flags(message)}", file=sys.stderr)
            sys.exit(1)

    return main
