"""Pixel quantities (eps, step sizes), in the [0, 1] range every model and attack works in.

Users write them as numbers or fractions (``8/255``, ``0.25``, the paper's ``64/256``), and
reports show both units: ``0.03137 (8/255)``. This is the one place that reads and shows them.
"""

import fractions


def parse(text):
    """``8/255`` or ``0.0314`` to a float in (0, 1]; ``ValueError`` says what was expected."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        try:
            value = float(fractions.Fraction(str(text).strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"expected a number or fraction in (0, 1], e.g. 8/255 or 0.25, got {text!r}") from None
    if not 0 < value <= 1:
        raise ValueError(
            f"expected a value in (0, 1] of the [0, 1] pixel range, got {text!r}; "
            "for 0-255 units write a fraction such as 8/255"
        )
    return value


def fraction(value):
    """``8/255`` when ``value`` is a whole number of 255ths, else the number (``0.25``)."""
    in_255 = value * 255
    return f"{round(in_255)}/255" if abs(in_255 - round(in_255)) < 1e-6 else f"{value:.4g}"


def both(value):
    """``0.0314 (8/255)``: the value in [0, 1] units and in 0-255 ones."""
    return f"{value:.4g} ({value * 255:.4g}/255)"
