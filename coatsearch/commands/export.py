"""`coatsearch export`: a checkpoint or a spec as ONNX, a torch.export program or a timm module."""

from __future__ import annotations

from pathlib import Path

import typer

from coatsearch.commands.common import app, console, err_console, user_errors_exit_2


@app.command("export")
@user_errors_exit_2
def export_command(
    source: str = typer.Argument(..., metavar="CHECKPOINT|SPEC", help="a checkpoint (.pt), a preset or a YAML spec"),
    to: str = typer.Option(..., "--to", help="onnx, torch (a torch.export .pt2 program) or timm (a module)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="the file to write (default: the source's name)"),
    image_size: int | None = typer.Option(None, "--image-size", help="export at this image size"),
    check: bool = typer.Option(True, "--check/--no-check", help="onnx: compare onnxruntime's logits with PyTorch's"),
) -> None:
    """Hand a network on: ONNX with a dynamic batch (checked with onnxruntime), a torch.export
    program that runs without coatsearch, or a module registering it in timm."""
    from coatsearch.export import export

    done = export(source, to, output, image_size=image_size, check=check)
    if not done.trained:
        err_console.print(f"{source} is a spec: exported with freshly initialised (seed 0) weights",
                          style="dim", highlight=False, soft_wrap=True)
    line = f"wrote {done.path}: {done.spec.name or 'network'} at {done.spec.image_size}px as {to}"
    if done.max_difference is not None:
        line += f"; onnxruntime vs PyTorch, batches 1 and 3: max |logit difference| {done.max_difference:.2g}"
    console.print(line, highlight=False, soft_wrap=True)
