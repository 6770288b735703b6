"""Rendering of ``mutune inspect``: the per-parameter table, the forward multipliers, the warnings.

(Beside :mod:`mutune.cli_render`, which holds the other commands' displays.)
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .cli_render import err, out


def _mult(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def _init(row: dict) -> str:
    return f"{row['init_std']:.4g}" if row["init"] == "normal" else row["init"]


def _cell(p: dict, key: Any, fmt: Any = _mult) -> str:
    """A parameter's value at the proxy, and at the target where it differs (``a -> b``)."""
    get = key if callable(key) else (lambda row: row[key])
    a = fmt(get(p["proxy"]))
    if "target" not in p:
        return a
    b = fmt(get(p["target"]))
    return a if a == b else f"{a} -> {b}"


def print_inspect(res: dict) -> None:
    """``mutune inspect``: one row per parameter (proxy -> target where they differ), then the
    forward multipliers and the warnings."""
    target = res["target"]
    model = res["model"]
    widths = f"width {res['proxy']['width']}" + (f" -> {target['width']}" if target else "")
    table = Table(
        title=f"{model['family']} model, {model['parametrization']}, base width {model['base_width']}, "
        f"{widths}; {res['optimizer']} lr {res['hparams']['lr']:g}",
        title_justify="left",
    )
    for col in ("parameter", "shape", "role", "width dims", "init std", "lr mult", "wd mult", "ε mult"):
        table.add_column(col, justify="left" if col in ("parameter", "role") else "right")
    for p in res["parameters"]:
        role = p["role"] + (" (tied)" if p["tied_readout"] else "")
        table.add_row(
            p["name"],
            _cell(p, "shape", lambda s: "×".join(map(str, s))),
            role,
            ",".join(map(str, p["width_dims"])) or "-",
            _cell(p, lambda row: row, _init),
            _cell(p, "lr_mult"),
            _cell(p, "wd_mult"),
            _cell(p, "eps_mult"),
        )
    out.print(table)
    for label, side in (("proxy", res["proxy"]), ("target", target)):
        if side is None:
            continue
        mult = side["multipliers"]
        parts = [f"α_in {_mult(mult['input'])}", f"logits × {_mult(mult['output'])}"]
        attn = mult["attention"]
        parts.append(f"attention {attn}" if isinstance(attn, str) else f"attention scale {_mult(attn)}")
        if "readout_modules" in mult:
            parts.append(
                f"hooks: α_in on {mult['input_modules']}, α_out/m on the input of {mult['readout_modules']}"
            )
        out.print(
            f"forward multipliers at width {side['width']} ({label}): " + "; ".join(parts), highlight=False
        )
    for w in res["warnings"]:
        err.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
