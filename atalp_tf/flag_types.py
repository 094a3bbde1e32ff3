"""absl flag types shared by the command-line modules (never imported by library code)."""

import fractions

from absl import flags


class PixelValueParser(flags.ArgumentParser):
    """A perturbation size in the [0, 1] pixel range, written as a number or a fraction.

    ``8/255`` and ``0.0314`` are the same eps; the paper's "0.25 of the 256 scale" is ``64/256``
    or ``0.25``. Values outside (0, 1] are refused, since pixels are in [0, 1].
    """

    syntactic_help = "a number or fraction in (0, 1], e.g. 8/255 or 0.25"

    def parse(self, argument):
        if isinstance(argument, (int, float)):
            value = float(argument)
        else:
            try:
                value = float(fractions.Fraction(argument.strip()))
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"expected {self.syntactic_help}, got {argument!r}") from None
        if not 0 < value <= 1:
            raise ValueError(
                f"expected a value in (0, 1] of the [0, 1] pixel range, got {argument!r}; "
                "for 0-255 units write a fraction such as 8/255"
            )
        return value

    def flag_type(self):
        return "pixel value"


def DEFINE_pixel_value(name, default, help_text, **kwargs):  # noqa: N802 (absl's naming)
    return flags.DEFINE(
        PixelValueParser(), name, default, help_text, serializer=flags.ArgumentSerializer(), **kwargs
    )


def describe_pixels(value):
    """``0.0314 (8/255)``: a pixel quantity in both units reports should show."""
    return f"{value:.4g} ({value * 255:.4g}/255)"


class PixelListParser(flags.ArgumentParser):
    """Comma-separated pixel values, each as ``PixelValueParser`` reads it: ``8/255,16/255``."""

    syntactic_help = "comma-separated numbers or fractions in (0, 1], e.g. 8/255,16/255"

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            items = list(argument)
        else:
            items = [item for item in str(argument).split(",") if item.strip()]
        if not items:
            raise ValueError(f"expected {self.syntactic_help}, got {argument!r}")
        return [PixelValueParser().parse(item) for item in items]

    def flag_type(self):
        return "pixel values"


def DEFINE_pixel_list(name, default, help_text, **kwargs):  # noqa: N802 (absl's naming)
    return flags.DEFINE(
        PixelListParser(), name, default, help_text, serializer=flags.CsvListSerializer(","), **kwargs
    )
