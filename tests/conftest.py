"""Shared fixtures: tiny specs that build and run in milliseconds on a CPU."""

from __future__ import annotations

import os

# as `import coatsearch` does when it comes first (torch is imported just below)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import atexit  # noqa: E402
import functools  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

# the shared helpers' asserts say what they compared, as a test module's do
pytest.register_assert_rewrite("tests.grid_runs")
import torch  # noqa: E402

from coatsearch.spec import NetSpec  # noqa: E402

if TYPE_CHECKING:
    from coatsearch.flops import Counts

torch.set_num_threads(2)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each ``xdist_group`` in one test process, so no two Ray clusters run at once.

    ``--dist loadgroup`` finds a test's group in the ``@group`` suffix the worker adds to
    its node id. pytest-xdist 3.8 adds it through ``item._nodeid``, which pytest 9 no longer
    reads (the id lives in ``item._id``): without this hook every group is split over both
    processes. It adds the suffix where xdist's did not take."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9
    except ImportError:  # older pytest reads xdist's suffix itself
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        node = getattr(item, "_id", None)
        if names and isinstance(node, NodeId) and node.names and not item.nodeid.endswith(suffix):
            # the suffix after the parameters, as xdist writes it: test[param]@group
            last = node.names[-1] + (f"[{node.params}]" if node.params is not None else "") + suffix
            item._id = NodeId(path=node.path, names=(*node.names[:-1], last))

# Prepared-data caches of the tests (and of the commands they start) go to a folder of the
# session's own, never the user's ~/.cache.
# The process that makes the folder removes it when it ends (the suite leaves nothing in /tmp).
if "COATSEARCH_CACHE" not in os.environ:
    os.environ["COATSEARCH_CACHE"] = tempfile.mkdtemp(prefix="coatsearch-test-cache-")
    atexit.register(shutil.rmtree, os.environ["COATSEARCH_CACHE"], True)


def tiny_spec(layout: str = "C-C-T-T", image_size: int = 32, **fields) -> NetSpec:
    """A narrow network of the given layout, for fast structural tests."""
    n = len(layout.split("-"))
    blocks = [2] + [1] * n
    channels = [16] + [16 * 2**i for i in range(n)]
    channels = [max(32, c) if i > 0 else c for i, c in enumerate(channels)]
    return NetSpec.from_layout(layout, blocks, channels, image_size=image_size, num_classes=10, **fields)


#: A search space whose trials train in a second or two (16x16, a few hundred images).
#: How the lines a run shows while it runs begin (`coatsearch.search.progress`): its bars, the
#: first estimate and one line per trial that ended.
PROGRESS_LINES = ("tiny trials", "  trial ", "estimated: ", "trial ")


def messages(stderr: str) -> list[str]:
    """A run's stderr without its progress display: what it says beyond that."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(PROGRESS_LINES)]


TINY_SPACE = {
    "study": "tiny",
    "base": {
        "image_size": 16, "num_classes": 10, "stem": {"channels": 8, "stride": 1},
        "stages": [
            {"kind": "C", "blocks": 1, "channels": 8},
            {"kind": "C", "blocks": 1, "channels": 16},
            {"kind": "T", "blocks": 2, "channels": 32, "head_dim": 16},
            {"kind": "T", "blocks": 1, "channels": 32, "head_dim": 16},
        ],
    },
    "params": {"split": {"choices": [1, 2]}},
    "split_total": 3,
    "budget": {"flops": "1.2M", "by": "width", "tolerance": 0.1},
    "objectives": ["val_acc", "flops"],
    "train": {"epochs": 2, "batch_size": 64},
    "data": {"source": "fashion-mnist", "train_size": 256, "val_fraction": 0.04},
    "sampler": "grid",
    "trials": 2,
    "resources": {"cpu": 1},
}


@pytest.fixture
def small_spec() -> NetSpec:
    return tiny_spec()


# --------------------------------------------------------------------------- results tables
LAYOUTS = ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "vit-rel")


def synthetic_row(trial: int, layout: str, rng, epochs: int = 3, status: str = "complete",
                  fidelity: int | None = None, **fields) -> dict:
    """One results row with the real columns and plausible numbers (fractions, MACs, JSON history)."""
    import json

    fidelity = epochs if fidelity is None else fidelity
    kinds = layout.split("-") if layout != "vit-rel" else ["T"]
    level = 0.80 + 0.02 * kinds.count("C") - 0.05 * (layout == "vit-rel") + rng.normal(0, 0.01)
    history = []
    for epoch in range(1, fidelity + 1):
        val = level - 0.08 / epoch
        train = val + 0.01 * epoch * (1 + kinds.count("T"))
        history.append({
            "epoch": epoch, "train_loss_running": 1.2 / epoch + rng.uniform(0, 0.05),
            "train_acc_running": train - 0.02, "train_eval_loss": 0.9 / epoch, "train_eval_acc": train,
            "val_loss": 1.0 / epoch + 0.2, "val_acc": val, "gap": train - val,
            "images_per_s": 380.0, "wall_time": 20.0 * epoch, "lr": 2e-3 / epoch,
        })
    last = history[-1] if history else {}
    row = {
        "trial": trial, "status": status, "fidelity": fidelity, "max_fidelity": epochs, "layout": layout,
        "blocks": "2,1,2,3,1", "channels": "32,32,64,128,256", "image_size": 32,
        "flops": 32e6 * (1 + rng.uniform(-0.03, 0.03)), "params": rng.uniform(0.4e6, 2.5e6),
        "val_acc": last.get("val_acc"), "val_loss": last.get("val_loss"),
        "train_eval_acc": last.get("train_eval_acc"), "train_acc_running": last.get("train_acc_running"),
        "train_loss_running": last.get("train_loss_running"), "gap": last.get("gap"), "images_per_s": 380.0,
        "wall_time": 20.0 * fidelity, "seed": 0, "node": "host", "worker": "host:1",
        "spec": json.dumps({"layout": layout}), "history": json.dumps(history), "param.layout": layout,
    }
    row.update(fields)
    if "spec" not in fields:  # a network follows from its sampled values (all but the seed), as a real spec does
        shape = {k: v for k, v in fields.items() if k.startswith("param.") and k != "param.seed"}
        row["spec"] = json.dumps({"layout": layout, **shape})
    return row


def layout_study_rows(per_layout: int = 2, epochs: int = 3, seed: int = 0, troubles: bool = True) -> list[dict]:
    """Rows like the layouts study's: every layout at matched FLOPs, plus a stopped, a failed,
    a diverged and an infeasible trial when ``troubles``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = [synthetic_row(len(LAYOUTS) * k + i, layout, rng, epochs)
            for k in range(per_layout) for i, layout in enumerate(LAYOUTS)]
    if troubles:
        n = len(rows)
        rows.append(synthetic_row(n, "C-T-T-T", rng, epochs, status="stopped", fidelity=1))
        rows.append(synthetic_row(n + 1, "C-C-T-T", rng, epochs, status="failed", fidelity=1,
                                  reason="RuntimeError: out of memory", val_acc=None))
        diverged = synthetic_row(n + 2, "vit-rel", rng, epochs, status="diverged", fidelity=2,
                                 reason="training loss is nan at epoch 2")
        history = __import__("json").loads(diverged["history"])
        history[-1]["train_loss_running"] = float("nan")
        diverged["history"] = __import__("json").dumps(history)
        rows.append(diverged)
        rows.append({"trial": n + 3, "status": "infeasible", "fidelity": 0, "max_fidelity": epochs,
                     "param.layout": "C-C-C-C", "reason": "no width multiplier meets 32M FLOPs within 3%"})
    return rows


@pytest.fixture
def write_study(tmp_path):
    """``write_study(rows, objectives=..., name=...)`` -> a run directory like run_study's."""
    import yaml

    from coatsearch.results import write_table
    from coatsearch.search import TrialRow

    def write(rows: list[dict], objectives=("val_acc", "flops"), name: str = "layouts", space: bool = True):
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        if space:
            data = {"study": name, "description": "synthetic rows", "objectives": list(objectives), "trials": len(rows)}
            (run_dir / "space.yaml").write_text(yaml.safe_dump(data))
        write_table([TrialRow.from_record(r) for r in rows], run_dir / "results.csv")
        return run_dir

    return write


@pytest.fixture(scope="session")
def traced_count() -> Callable[..., Counts]:
    """`count` by the traced route, memoised for the session: each preset is traced once."""
    from coatsearch.flops import count

    @functools.cache
    def traced(spec: NetSpec, image_size: int | None = None) -> Counts:
        return count(spec, image_size, route="traced")

    return traced
