"""The ``train_size`` subset drawn once (``data.subset: fixed``, rows pinned to what every
committed study trained on) or per training seed (``per_seed``), with validation and test
the same images for every seed either way; and the setting carried to every reader of a
trial's data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from coatsearch.data import DataError, load_data, split_rows
from coatsearch.data.sources import read_source
from coatsearch.search import compile_space
from coatsearch.search.inputs import load_trial_data
from coatsearch.space import DataSettings, SpaceError, load_space
from tests.conftest import TINY_SPACE


def _digest(rows: tuple[torch.Tensor | None, ...]) -> str:
    return hashlib.sha256(b"".join(r.numpy().astype("int64").tobytes() for r in rows if r is not None)).hexdigest()[:16]


@pytest.fixture(scope="module")
def labels() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    raw = read_source("fashion-mnist", 16, "memory", "fail")
    assert raw.test_labels is not None
    return raw.train_labels, raw.test_labels, raw.classes


def _rows(labels, seed: int, train_size: int | None, subset_seed: int | None = None):
    train, test, classes = labels
    return split_rows("fashion-mnist", train, test, classes, val_fraction=0.1, train_size=train_size,
                      seed=seed, test_fraction=0.1, subset_seed=subset_seed)


#: sha256 (first 16 hex digits) of the (train, val) rows split_rows gave before the
#: per-seed subset existed: a fixed subset must keep giving exactly these.
PINNED = {(0, None): "537ec2b902b85b6d", (0, 2000): "882cfecd9b9e3c72", (1, None): "c9239a1659b0fc49",
          (1, 2000): "0c312daab25a6da3", (2, None): "d6b38ca3a61609e0", (2, 2000): "00621b61920ab197",
          (7, None): "d4a35dcefe515076", (7, 2000): "8f53328f49c6bacb"}


@pytest.mark.parametrize("seed, train_size", list(PINNED))
def test_a_fixed_subset_draws_the_rows_it_always_drew(labels, seed: int, train_size: int | None) -> None:
    assert _digest(_rows(labels, seed, train_size)) == PINNED[seed, train_size]


def test_a_fixed_subset_with_a_carved_test_split_is_unchanged() -> None:
    labels = torch.arange(600) % 6
    for seed, pinned in ((0, "2ecc47f6b65593c0"), (3, "26d6f627a831a63e")):
        rows = split_rows("syn", labels, None, tuple("abcdef"), val_fraction=0.2, train_size=100, seed=seed,
                          test_fraction=0.1)
        assert _digest(rows) == pinned


def test_per_seed_subsets_differ_in_rows_not_in_size_balance_or_evaluation_images(labels) -> None:
    train_labels = labels[0]
    fixed_train, fixed_val, _ = _rows(labels, 0, 2000)
    draws = [_rows(labels, 0, 2000, subset_seed=s) for s in (0, 1, 2)]
    pool = set(torch.cat([fixed_train, *(d[0] for d in draws)]).tolist())
    for train, val, test in draws:
        assert len(train) == 2000 and len(set(train.tolist())) == 2000
        assert torch.equal(torch.bincount(train_labels[train]), torch.bincount(train_labels[fixed_train]))
        assert torch.equal(val, fixed_val) and test is None  # the source's own test split, untouched
        assert not set(train.tolist()) & set(val.tolist())
    trains = [set(d[0].tolist()) for d in draws] + [set(fixed_train.tolist())]
    assert all(a != b for i, a in enumerate(trains) for b in trains[i + 1:])
    assert not pool & set(fixed_val.tolist())
    # repeatable: the same pair of seeds draws the same rows; the seeds' order matters
    assert torch.equal(_rows(labels, 0, 2000, subset_seed=1)[0], draws[1][0])
    assert not torch.equal(_rows(labels, 1, 2000, subset_seed=0)[0], draws[1][0])


def test_a_carved_test_split_stays_put_under_per_seed_subsets() -> None:
    labels = torch.arange(600) % 6
    a = split_rows("syn", labels, None, tuple("abcdef"), val_fraction=0.2, train_size=100, seed=0,
                   test_fraction=0.1, subset_seed=0)
    b = split_rows("syn", labels, None, tuple("abcdef"), val_fraction=0.2, train_size=100, seed=0,
                   test_fraction=0.1, subset_seed=1)
    assert not torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])  # type: ignore[arg-type]


def _all(images) -> torch.Tensor:
    return images.gather(torch.arange(len(images)))


def test_trial_data_follows_the_training_seed_only_under_per_seed() -> None:
    fixed, per_seed = DataSettings(train_size=200), DataSettings(train_size=200, subset="per_seed")
    assert load_trial_data(fixed, 16, 0, 0) is load_trial_data(fixed, 16, 0, 5)  # one read for every seed
    a, b = load_trial_data(per_seed, 16, 0, 0), load_trial_data(per_seed, 16, 0, 1)
    assert len(a.train) == len(b.train) == 200 and not torch.equal(_all(a.train), _all(b.train))
    base = load_trial_data(fixed, 16, 0, 0)
    for bundle in (a, b):
        assert torch.equal(_all(bundle.val), _all(base.val)) and torch.equal(_all(bundle.test), _all(base.test))
        assert torch.equal(bundle.val.labels, base.val.labels)
    # without a training seed (sizes, validation images, proxies) a per-seed setting reads the fixed draw
    assert torch.equal(_all(load_trial_data(per_seed, 16, 0).train), _all(base.train))


def test_a_trial_trains_on_its_seeds_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    import coatsearch.train
    from coatsearch.search.trial import run_trial

    seen = []

    def capture(spec, config, data, **kwargs):
        seen.append(data)
        raise RuntimeError("captured")

    monkeypatch.setattr(coatsearch.train, "fit", capture)
    space = {**TINY_SPACE, "data": {**TINY_SPACE["data"], "subset": "per_seed"},
             "params": {"split": {"choices": [1]}, "seed": {"choices": [0, 1]}}}
    from coatsearch.space import space_from_dict

    plan = compile_space(space_from_dict(space), check_data=False)
    rows = [run_trial(plan, n, {"split": 1, "seed": s}) for n, s in enumerate((0, 1))]
    assert all("captured" in (r.reason or "") for r in rows)
    first, second = seen
    assert len(first.train) == len(second.train) == 256 and not torch.equal(_all(first.train), _all(second.train))
    assert torch.equal(_all(first.val), _all(second.val)) and torch.equal(_all(first.test), _all(second.test))


def test_a_training_file_reads_its_trainers_seeds_subset() -> None:
    from coatsearch.spec import NetSpec
    from coatsearch.trainfile import TrainingFile

    spec = NetSpec.from_dict(TINY_SPACE["base"])
    data = DataSettings(train_size=120, subset="per_seed")
    one, two = (TrainingFile(spec=spec, data=data, train={"seed": s}).load_data() for s in (3, 4))
    assert not torch.equal(_all(one.train), _all(two.train)) and torch.equal(_all(one.val), _all(two.val))
    assert torch.equal(_all(one.train), _all(load_trial_data(data, 16, 0, 3).train))


def test_a_bad_subset_is_one_line_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY_SPACE, "data": {**TINY_SPACE["data"], "subset": "per_trial"}}))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    text = str(info.value)
    assert "\n" not in text and "data.subset" in text and "per_seed" in text, text
    with pytest.raises(DataError, match="subset_seed: expected a whole number"):
        load_data("fashion-mnist", image_size=16, train_size=100, subset_seed=-1)


def test_the_run_folders_space_keeps_the_setting() -> None:
    from coatsearch.space import space_from_dict

    space = space_from_dict({**TINY_SPACE, "data": {**TINY_SPACE["data"], "subset": "per_seed"}})
    assert yaml.safe_load(space.to_yaml())["data"]["subset"] == "per_seed"
    assert space_from_dict(TINY_SPACE).data.subset == "fixed"  # a space written before the setting


def test_streamed_folders_draw_the_same_per_seed_subsets_as_memory(tmp_path: Path) -> None:
    from PIL import Image

    for c in range(3):
        (tmp_path / f"c{c}").mkdir()
        for i in range(12):
            Image.new("L", (8, 8), color=20 * c + i).save(tmp_path / f"c{c}" / f"{i:02d}.png")

    def read(mode: str, subset_seed: int):
        return load_data(str(tmp_path), image_size=8, val_fraction=0.25, train_size=12, mode=mode,
                         subset_seed=subset_seed)

    one, two = read("stream", 0), read("stream", 1)
    assert one.train.paths != two.train.paths and one.val.paths == two.val.paths and one.test.paths == two.test.paths
    assert torch.equal(torch.bincount(one.train.labels), torch.bincount(two.train.labels))
    memory = read("memory", 1)  # the same images, whichever way the folder is read
    values = sorted(int(v) for v in _all(memory.train)[:, 0, 0, 0])
    named = sorted(20 * int(Path(p).parent.name[1:]) + int(Path(p).stem) for p in two.train.paths)
    assert values == named
