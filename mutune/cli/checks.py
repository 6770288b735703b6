"""The µP checks: ``mutune coord-check`` (do activations keep their size as the model widens or deepens?)
and ``mutune inspect`` (how µP treats every parameter), each with its rendering."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import arguments, config
from ..errors import SpecError
from .app import OverridesArg, ThreadsOpt, app, comma_list, threads_override
from .console import err, out, show


@app.command("coord-check")
def coord_check(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", metavar="DIR", help="results go to RUN_DIR/checks; default: runs/<name>"),
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="tiny shapes (base width 32)")] = False,
    compare: Annotated[
        str | None,
        typer.Option("--compare", metavar="sp", help="sp: also check the SP twin, the negative control"),
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", metavar="LR", help="default: 0.01 (AdamW)")] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds", metavar="N", help="seeds per width (default 3; 6 with --depths or --experts)"
        ),
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option(
            "--depths",
            metavar="L1,L2,...",
            help="check across depth instead (even depths, at the base width): CompleteP keeps every slope flat",
        ),
    ] = None,
    experts: Annotated[
        str | None,
        typer.Option(
            "--experts",
            metavar="E1,E2,...",
            help="check across the expert count of a moe model instead (at the base width)",
        ),
    ] = None,
    allow_unchecked: Annotated[
        str | None,
        typer.Option(
            "--allow-unchecked",
            metavar="attention",
            help="pass even where the model has attention whose scores the check cannot see (default: "
            "the verdict is incomplete, exit 1); also model.allow_unchecked",
        ),
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Check that activations keep their size as the model widens (µP), or deepens, with a verdict.

    Trains the model at base_width × 1, 2, 4, 8, 16 for a few steps and fits the slope of every
    layer's mean |x| against width; writes CSVs and a PNG to RUN_DIR/checks. With --depths, the
    same at the listed depths (slopes against depth; files coord_check_depth*); with --experts, at
    the listed expert counts (files coord_check_experts*). Exit 0 when the spec's model passes, 1
    when it fails or the check is incomplete (attention it cannot see).

    Example: mutune coord-check configs/quickstart.yaml --compare sp
    """
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise SpecError("--lr", f"must be a finite number > 0, got {lr}")
    spec = config.load_spec(config_path, [*(overrides or []), *threads_override(threads)], smoke=smoke)
    if depths is not None and experts is not None:
        raise SpecError("--experts", "one axis at a time: give --depths or --experts")
    along, sizes = (
        ("depth", comma_list(depths, "--depths", int))
        if depths is not None
        else ("experts", comma_list(experts, "--experts", int))
        if experts is not None
        else (None, None)
    )
    allowed = comma_list(allow_unchecked, "--allow-unchecked", str) or ()
    # the arguments, as the check itself will refuse them, before torch loads
    arguments.coord_check(
        spec,
        compare=compare,
        seeds=3 if seeds is None else seeds,
        along=along,
        sizes=sizes,
        allow_unchecked=allowed,
    )
    from .. import checks as checks_mod
    from .. import search as search_mod

    out_dir = (run_dir or search_mod.default_run_dir(spec, smoke)) / "checks"
    res = checks_mod.coord_check(
        spec,
        compare=compare,
        lr=lr,
        seeds=seeds if seeds is not None else (checks_mod.AXIS_SEEDS if along else 3),
        out_dir=out_dir,
        along=along,
        sizes=sizes,
        prefix=f"coord_check_{along}" if along else "coord_check",
        allow_unchecked=allowed,
    )
    print_coord_check(res)
    out.print(f"-> {res.files['slopes']}, {res.files['png']}", highlight=False)
    raise typer.Exit(0 if res.passed else 1)


@app.command()
def inspect(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="the YAML spec")],
    overrides: OverridesArg = None,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to", help="KEY=VALUE for a target, e.g. width=1024 (repeatable); default: the spec's target"
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """How µP treats every parameter of the model: role, width dims, init, LR, weight decay, ε.

    At the spec's width and at a target width, with the forward multipliers and warnings; the
    values are what the optimizer's param groups hold. Allocates nothing.

    Example: mutune inspect configs/quickstart.yaml --to width=512
    """
    if fmt not in ("table", "json"):
        raise SpecError("--format", f"expected table or json, got {fmt!r}")
    spec = config.load_spec(config_path, overrides or [])
    arguments.inspect(spec, to or [])  # a --to key the transfer would refuse, before torch loads
    from .. import audit

    result = audit.inspect(spec, to or [])
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        print_inspect(result)


def print_coord_check(res: Any) -> None:
    """The verdict line and the slope table ((layer, measure) × step) of a coord check and its
    control, each row with its limit; an exempt cell is marked ``*`` and its exemption said below the
    table (a mark that survives a pipe, where dim text does not). The modules inside the blocks are
    shown only where they fail or come closest to their limit (the CSV has them all)."""
    from ..checks.verdict import MEASURES
    from ..units import around

    for r in [res] + ([res.control] if res.control is not None else []):
        out.print(r.message(), highlight=False, soft_wrap=True)
        table = Table(
            title=f"slope of log size against log {r.axis} (lr {r.lr:g}, {r.seeds} seeds): a row passes while "
            "every slope is within ±its limit; * exempt, see below",
            title_justify="left",
        )
        table.add_column("layer")
        table.add_column("measure")
        table.add_column("limit", justify="right")
        for t in range(r.steps):
            table.add_column(f"t={t}", justify="right")
        s = r.slopes[r.slopes.status != "not_found"]
        exempt: dict[str, list[str]] = {}  # reason -> the cells it covers
        closest = (r.closest or {}).get("layer") if r.passed else None  # the message names it: shown
        for (layer, metric), g in s.groupby(["layer", "metric"], sort=False):
            if g.kind.iloc[0] == "leaf" and not (g.status == "fail").any() and layer != closest:
                continue
            cells = {x.t: x for x in g.itertuples()}
            row = []
            for t in range(r.steps):
                x = cells.get(t)
                if x is None:
                    row.append("")
                    continue
                text = f"{x.slope:+.2f}" if math.isfinite(x.slope) else x.status
                if x.status == "exempt":
                    text += "*"
                    exempt.setdefault(x.reason, []).append(f"{layer} {MEASURES[metric]} t={t}")
                style = {"fail": "bold red", "exempt": "dim"}.get(x.status, "")
                row.append(f"[{style}]{text}[/]" if style else text)
            measure = "scale × head dim" if g.kind.iloc[0] == "attn_scale" else MEASURES.get(metric, metric)
            want = g.expected.iloc[0] if "expected" in g else 0.0
            table.add_row(layer, measure, f"{around(want)}±{g.limit.iloc[0]:g}", *row)
        show(table)
        for reason, where in exempt.items():
            out.print(f"* exempt ({', '.join(where)}): {reason}", highlight=False, soft_wrap=True)
    if res.control is not None and res.control.passed:
        err.print(
            "[yellow]warning:[/] the SP control passed too, so this check cannot tell µP from SP here; "
            "raise --lr or the widths",
            highlight=False,
        )


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


def _source(text: str) -> str:
    """Where a role came from, short for the table (``--format json`` has it whole): the module's
    type, the use (table, added, elementwise, or the product), shape, user."""
    if text.startswith("module: "):
        return text[len("module: ") :].split(",")[0].split(" (")[0]
    if text.startswith("use: "):
        for words, short in (
            ("indexed as a table", "table"),
            ("added to the stream", "added"),
            ("elementwise", "× elementwise"),
        ):
            if words in text:
                return f"use: {short}"
        return "use: " + text.split("(", 1)[-1].split(", summed")[0].rstrip(")")
    return text.split(" (")[0].split(";")[0]


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
    cols = (
        "parameter",
        "shape",
        "role",
        "role from",
        "width dims",
        "init std",
        "lr mult",
        "wd mult",
        "ε mult",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("parameter", "role", "role from") else "right")
    for p in res["parameters"]:
        role = p["role"] + (" (tied)" if p["tied_readout"] else "")
        table.add_row(
            p["name"],
            _cell(p, "shape", lambda s: "×".join(map(str, s))),
            role,
            _source(p.get("role_source", "")),
            ",".join(map(str, p["width_dims"])) or "-",
            _cell(p, lambda row: row, _init),
            _cell(p, "lr_mult"),
            _cell(p, "wd_mult"),
            _cell(p, "eps_mult"),
        )
    show(table)
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
