"""Numbers for people: SI prefixes and byte sizes. Pure formatting, no torch, so the command line's
rendering can use it before (or without) loading the training stack."""

from __future__ import annotations


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (SI prefixes), for plans and tables; from 1e21 on, '1.3e+22' (a 6.7B
    model's pretraining FLOPs read better so than as '1.3e+04E')."""
    if abs(n) >= 1e21:
        return f"{n:.3g}{unit}"
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def human_bytes(n: float) -> str:
    for div, suffix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {suffix}"
    return f"{n:.0f} B"
