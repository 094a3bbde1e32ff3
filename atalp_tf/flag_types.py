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
