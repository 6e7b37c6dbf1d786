"""`coatsearch latency`: calibrate this device's latency profile, predict from it."""

from __future__ import annotations

from pathlib import Path

import typer

from coatsearch.commands.common import app, console, err_console, user_errors_exit_2

latency_app = typer.Typer(help="Latency model: time the building blocks on this device, predict networks' latency.",
                          no_args_is_help=True)
app.add_typer(latency_app, name="latency")


@latency_app.command("calibrate")
@user_errors_exit_2
def latency_calibrate(
    spaces: list[str] = typer.Argument(None, metavar="[SPACE.yaml]...", help="spaces whose candidates to time"),
    output: Path = typer.Option(Path("latency-profile.json"), "-o", "--output", help="the profile to write"),
    batch: list[int] = typer.Option([1], "--batch", help="batch sizes to time (repeat the option)"),
    random_nets: int = typer.Option(40, "--random", help="random networks (32-224 px) timed too, for the fits and "
                                    "the whole-network scale"),
    rounds: int = typer.Option(7, "--rounds", help="interleaved rounds; the median is kept"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads to time at, recorded in the profile; "
                                       "its predictions hold at that count (default: torch's)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
) -> None:
    """Time the stem, every block and the head of the given spaces' candidates and of
    random networks, and the first 40 of those networks whole in the same interleaved
    rounds (for the scale from units to a network), and write this device's profile."""
    import time

    import torch

    from coatsearch.latency import calibrate, random_specs
    from coatsearch.search import compile_space
    from coatsearch.search.preview import preview
    from coatsearch.space import load_space

    if threads is not None:
        torch.set_num_threads(threads)
    specs = []
    for space in spaces or []:
        plan = compile_space(load_space(space), source=space, check_data=False, check_storage=False)
        specs += [c.spec for c in preview(plan) if c.spec is not None]
    specs += random_specs(random_nets, seed=12345)
    start = time.perf_counter()
    profile = calibrate(specs, batch, rounds=rounds, device=device,
                        log=lambda line: err_console.print(line, style="dim", highlight=False))
    profile.notes["seconds"] = round(time.perf_counter() - start, 1)
    profile.save(output)
    c = profile.conditions
    console.print(f"wrote {output}: {profile.notes['units']} units timed on {c['device']} ({c['threads']} threads, "
                  f"torch {c['torch']}) in {profile.notes['seconds']:.0f} s", highlight=False)


@latency_app.command("predict")
@user_errors_exit_2
def latency_predict(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    profile_path: Path = typer.Option(..., "--profile", help="a profile written by `coatsearch latency calibrate`"),
    batch: int = typer.Option(1, "--batch", help="batch size"),
    image_size: int | None = typer.Option(None, "--image-size", help="predict at this size"),
    allow_other: bool = typer.Option(False, "--allow-other",
                                     help="warn, not refuse, when the profile was made on another device or torch"),
) -> None:
    """Predict a network's latency on this device from its profile, at the profile's own
    thread count: nothing runs, so this process's threads do not matter (as in a search)."""
    import warnings

    from coatsearch.latency import Profile, predict
    from coatsearch.latency.profile import PREDICTION_CONDITIONS
    from coatsearch.presets import load_spec

    profile = Profile.load(profile_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile.check(strict=not allow_other, compared=PREDICTION_CONDITIONS)
    for warning in caught:
        err_console.print(f"[yellow]warning:[/] {warning.message}", highlight=False, soft_wrap=True)
    net = load_spec(spec)
    if image_size is not None:
        net = net.replace(image_size=image_size)
    console.print(f"{net.name or spec}: {predict(net, batch, profile):.2f} ms predicted at batch {batch}, "
                  f"{profile.conditions.get('threads')} threads (the profile's)", highlight=False)
