"""`coatsearch rank SPACE --proxy NAME`: a space's candidates ranked by a training-free
proxy, best first, before anything is trained."""

from __future__ import annotations

import json

import typer

from coatsearch.commands.common import app, console, err_console, user_errors_exit_2
from coatsearch.errors import CoatsearchError


@app.command("rank")
@user_errors_exit_2
def rank_command(
    space_file: str | None = typer.Argument(None, metavar="SPACE.yaml", help="a search space (see spaces/)"),
    proxy: str = typer.Option("synflow", "--proxy", help="a proxy of coatsearch.proxies.PROXIES (see --list)"),
    seed: int | None = typer.Option(None, "--seed", help="initial weights and images (default: the trainer's seed)"),
    overrides: list[str] = typer.Option([], "--set", help="override a space field: dotted.key=value"),
    as_json: bool = typer.Option(False, "--json", help="print the ranking as JSON"),
    list_proxies: bool = typer.Option(False, "--list", help="list the proxies and what each measures"),
) -> None:
    """Rank a space's candidates by a proxy computed at initialisation (nothing is trained,
    except by the `fidelity` baseline: a fraction of an epoch)."""
    from coatsearch.proxies import PROXIES

    if list_proxies:
        for name in PROXIES:
            console.print(f"{name}: {PROXIES[name].about}", highlight=False)
        return
    if space_file is None:
        raise CoatsearchError("SPACE.yaml: expected a search space to rank (or --list)")
    from coatsearch.report.tables import format_cell
    from coatsearch.search import compile_space
    from coatsearch.search.proxy_rank import rank_candidates
    from coatsearch.space import load_space

    _ = PROXIES[proxy]  # an unknown proxy: one line, before the space is compiled
    plan = compile_space(load_space(space_file, overrides), source=space_file, check_data=False, check_storage=False)
    with err_console.status(f"scoring candidates by {proxy}...") as status:
        ranked = rank_candidates(plan, proxy, seed,
                                 on_each=lambda done, total: status.update(f"scoring by {proxy}: {done}/{total}"))
    if as_json:
        print(json.dumps([{**r.candidate.to_dict(), "proxy": proxy, "score": r.score, "rank": r.rank,
                           "seconds": round(r.seconds, 3)} for r in ranked], default=str))
        return
    from rich.table import Table

    names = list(dict.fromkeys(k for r in ranked for k in r.candidate.sampled))
    table = Table(title=f"{plan.study}: {len(ranked)} candidates ranked by {proxy} (higher first)")
    for column in ["rank", *names, "layout", "blocks", "channels", "FLOPs", "params", f"score ({proxy})", "s"]:
        table.add_column(column)
    for r in ranked:
        c, net = r.candidate, r.candidate.net
        table.add_row("-" if r.rank is None else str(r.rank), *(format_cell(n, c.sampled.get(n)) for n in names),
                      *([net.layout, net.blocks, net.channels, format_cell("flops", net.flops),
                         format_cell("params", net.params)] if net else ["-"] * 5),
                      c.status if r.score is None else f"{r.score:.6g}", f"{r.seconds:.2f}")
    console.print(table)
    scored = [r.seconds for r in ranked if r.score is not None]
    if scored:
        console.print(f"{len(scored)} scored in {sum(scored):.1f} s ({max(scored):.2f} s at most)", style="dim",
                      highlight=False)
