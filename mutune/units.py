"""Numbers for people: SI prefixes and byte sizes. Pure formatting, no torch, so the command line's
rendering can use it before (or without) loading the training stack."""

from __future__ import annotations

SI = (
    (1e30, "Q"),
    (1e27, "R"),
    (1e24, "Y"),
    (1e21, "Z"),
    (1e18, "E"),
    (1e15, "P"),
    (1e12, "T"),
    (1e9, "G"),
    (1e6, "M"),
    (1e3, "k"),
)


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M': SI prefixes all the way (a 6.7B model's pretraining is '13Z' FLOPs, beside a
    search's '907E'), so that one line of a plan never mixes '907E' with '1.3e+22'; beyond 1e33, the
    exponent."""
    if abs(n) >= 1e33:
        return f"{n:.3g}{unit}"
    for div, suffix in SI:
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def human_bytes(n: float) -> str:
    for div, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {suffix}"
    return f"{n:.0f} B"


def around(centre: float) -> str:
    """The centre a ± limit is around, written before the ``±`` ("-0.5 ±0.3"): nothing for 0 or NaN."""
    return f"{centre:+g} " if centre == centre and centre else ""
