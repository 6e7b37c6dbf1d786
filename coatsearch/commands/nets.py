"""Commands about one network: build, presets, flops, match, scale, family, convert.

Each parses its options, calls the library and prints a view from
`coatsearch.report.terminal`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from coatsearch.commands.common import app, console, err_console, user_errors_exit_2, write_output
from coatsearch.errors import CoatsearchError, os_reason
from coatsearch.units import FLOPS_NOTE


@app.command()
@user_errors_exit_2
def build(
    spec: str = typer.Argument(..., help="a preset name (see `coatsearch presets`) or a YAML spec file"),
    image_size: int | None = typer.Option(None, "--image-size", help="count at this size"),
) -> None:
    """Print the network a spec describes, stage by stage, with params and FLOPs."""
    from coatsearch.flops import count
    from coatsearch.presets import load_spec
    from coatsearch.report import terminal

    net = load_spec(spec)
    if image_size is not None:
        net = net.replace(image_size=image_size)
    console.print(terminal.spec_table(net, count(net), spec))
    console.print(FLOPS_NOTE, style="dim")


@app.command()
@user_errors_exit_2
def presets(
    image_size: int | None = typer.Option(None, "--image-size", help="count at this size"),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="show FLOPs"),
) -> None:
    """List the built-in presets with their parameters and FLOPs (analytic counts)."""
    from coatsearch.report.terminal import presets_table

    console.print(presets_table(image_size, flops))


@app.command("flops")
@user_errors_exit_2
def flops_command(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    image_size: int | None = typer.Option(None, "--image-size", help="count at this size"),
    by_op: bool = typer.Option(False, "--by-op", help="also break FLOPs down by operator"),
    traced: bool = typer.Option(True, "--traced/--no-traced", help="also trace the model with fvcore"),
) -> None:
    """Count FLOPs, params and activations by the analytic and the traced route, side by side."""
    import time

    from coatsearch.flops import count
    from coatsearch.presets import load_spec
    from coatsearch.report.terminal import counts_tables, counts_timing

    net = load_spec(spec)
    if image_size is not None:
        net = net.replace(image_size=image_size)
    start = time.perf_counter()
    analytic = count(net, route="analytic")
    analytic_s, counts, traced_s = time.perf_counter() - start, None, 0.0
    if traced:
        with err_console.status(f"tracing {net.name or spec} with fvcore..."):
            start = time.perf_counter()
            counts = count(net, route="traced")
            traced_s = time.perf_counter() - start
    for table in counts_tables(net, spec, analytic, counts, by_op):
        console.print(table)
    console.print(counts_timing(analytic, analytic_s, counts, traced_s), style="dim")
    console.print(FLOPS_NOTE, style="dim")


@app.command("match")
@user_errors_exit_2
def match_command(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    flops: str | None = typer.Option(None, "--flops", help="FLOP target, e.g. 4.2G or 30M"),
    params: str | None = typer.Option(None, "--params", help="parameter target, e.g. 25M"),
    by: str = typer.Option("width", "--by", help="width, depth, both or ratios (widths keep their ratios exactly)"),
    tolerance: float = typer.Option(0.01, "--tolerance", help="accepted relative error"),
    strict: bool = typer.Option(False, "--strict", help="fail (exit 2) when the target is missed"),
    image_size: int | None = typer.Option(None, "--image-size", help="match at this image size"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the matched spec here"),
) -> None:
    """Scale a spec's widths or depths to a FLOP or parameter budget."""
    from coatsearch.budget import match_budget, parse_count
    from coatsearch.flops import count_analytic
    from coatsearch.presets import load_spec
    from coatsearch.report.terminal import match_table

    flops_target = parse_count(flops, "--flops") if flops is not None else None
    params_target = parse_count(params, "--params") if params is not None else None
    net = load_spec(spec)
    if image_size is not None:
        net = net.replace(image_size=image_size)
    result = match_budget(
        net, flops=flops_target, params=params_target, by=by,  # type: ignore[arg-type]
        tolerance=tolerance, strict=strict,
    )
    console.print(match_table(net, spec, result, count_analytic(net)))
    style = None if result.within_tolerance else "yellow"
    console.print(result.message, style=style, highlight=False, soft_wrap=True)
    if output is not None:
        write_output(output, result.spec.to_yaml())
        console.print(f"wrote {output}", style="dim")


@app.command("scale")
@user_errors_exit_2
def scale_command(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    rule: str = typer.Option("coatnet", "--rule", help="coatnet, compound, depth, width or resolution"),
    flops: str | None = typer.Option(None, "--flops", help="target: a multiple (2x) or a count (8.4G)"),
    params: str | None = typer.Option(None, "--params", help="target: a multiple (2x) or a count (42M)"),
    tolerance: float = typer.Option(0.01, "--tolerance", help="accepted relative error of the final width match"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the scaled spec here"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
) -> None:
    """Grow (or shrink) a network to a FLOP or parameter target by a scaling rule."""
    from coatsearch.presets import load_spec
    from coatsearch.report.terminal import family_table, scaled_record
    from coatsearch.scaling import scale

    net = load_spec(spec)
    result = scale(net, rule, flops=flops, params=params, tolerance=tolerance)
    if output is not None:
        write_output(output, result.spec.to_yaml())
    if as_json:
        print(json.dumps(scaled_record(result)))
        return
    console.print(family_table([scaled_record(result)], f"{net.name or spec} by the {rule} rule"))
    if result.note:
        console.print(result.note, style="dim", highlight=False)
    if output is not None:
        console.print(f"wrote {output}", style="dim")


@app.command()
@user_errors_exit_2
def family(
    base: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    rule: str = typer.Option("coatnet", "--rule", help="coatnet, compound, depth, width or resolution"),
    steps: int = typer.Option(3, "--steps", help="members after the base, each at twice the cost"),
    factor: float = typer.Option(2.0, "--factor", help="cost multiple from one member to the next"),
    out_dir: Path | None = typer.Option(None, "-o", "--out", help="write each member's spec into this folder"),
    as_json: bool = typer.Option(False, "--json", help="print the family as JSON"),
) -> None:
    """A family grown from a base by a rule: the base and STEPS members at FACTOR x the cost each."""
    from coatsearch.presets import load_spec
    from coatsearch.report.terminal import family_table, scaled_record
    from coatsearch.scaling import family as grow

    net = load_spec(base)
    members = grow(net, rule, steps, factor)
    records = [scaled_record(m) for m in members]
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CoatsearchError(f"--out {out_dir}: cannot create the folder ({os_reason(exc)})") from None
        for k, member in enumerate(members):
            write_output(out_dir / f"{net.name or 'base'}-{rule}-{k}.yaml", member.spec.to_yaml(), "--out")
    if as_json:
        print(json.dumps(records))
        return
    console.print(family_table(records, f"{net.name or base}: the {rule} family, x{factor:g} cost per step"))
    if members[-1].note:
        console.print(members[-1].note, style="dim", highlight=False)
    console.print(FLOPS_NOTE, style="dim")


@app.command("convert")
@user_errors_exit_2
def convert_command(
    checkpoint: Path = typer.Argument(..., help="a torch file: a state_dict, or {'spec': ..., 'state_dict': ...}"),
    image_size: int = typer.Option(..., "--image-size", help="the resolution to fine-tune at, e.g. 384"),
    spec: str | None = typer.Option(None, "--spec", help="the network's spec (a preset or YAML file) for a bare state_dict"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write {'spec', 'state_dict'} at the new size"),
) -> None:
    """Enlarge a checkpoint's relative-bias tables to a new resolution, for fine-tuning there."""
    from coatsearch.nn.convert import convert_checkpoint
    from coatsearch.presets import load_spec

    new_spec, resized = convert_checkpoint(checkpoint, image_size, load_spec(spec) if spec else None, output)
    console.print(f"wrote {output}: {new_spec.name or 'network'} at {image_size}px, {resized} bias tables resized")
