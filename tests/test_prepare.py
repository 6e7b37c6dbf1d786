"""Prepared datasets, streaming and the batch feed: decoded once, atomic, never stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from coatsearch import TrainConfig, fit
from coatsearch.data import DataError, load_data
from coatsearch.data import cache_format as C
from coatsearch.data import decode as D
from coatsearch.data import fingerprint as F
from coatsearch.data import prepared as P
from coatsearch.data.pipeline import Feed
from tests.conftest import TINY_SPACE, tiny_spec


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("COATSEARCH_CACHE", str(folder))
    return folder


def jpeg_folder(root: Path, n: int, classes: int = 4, side: int = 48, seed: int = 0) -> Path:
    """Small noisy JPEGs whose colour encodes the class."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % classes
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        pixels = np.clip(rng.normal(60 * c, 30, (side, side + 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"c{c}" / f"{i:05d}.jpg", quality=85)
    return root


def cache_files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


# ----------------------------------------------------------------------------- same data
@pytest.mark.parametrize("width,height,size", [(320, 256, 64), (500, 375, 64), (333, 500, 32), (130, 97, 32),
                                               (64, 64, 32), (48, 56, 32), (1024, 700, 96)])
def test_simplejpeg_decodes_the_pixels_pillows_draft_does(tmp_path, monkeypatch, width, height, size) -> None:
    pytest.importorskip("simplejpeg")
    rng = np.random.default_rng(width)
    smooth = Image.fromarray(rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8))
    noisy = np.asarray(smooth.resize((width, height), Image.BILINEAR), dtype=np.int16) + rng.integers(-20, 20, (height, width, 3))
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=88)
    assert D._decode_scaled_jpeg(path, "RGB", size, None) is not None  # simplejpeg takes this file
    fast = D.decode_fitted(path, "RGB", size)
    monkeypatch.setattr(D, "_simplejpeg", None)
    pillow = D.decode_fitted(path, "RGB", size)
    assert fast.shape == pillow.shape == (3, size, size)
    assert np.array_equal(fast, pillow)


def test_files_simplejpeg_rejects_are_decoded_by_pillow(tmp_path) -> None:
    gray = tmp_path / "gray.jpg"
    Image.fromarray(np.full((80, 80), 90, np.uint8)).save(gray)
    png = tmp_path / "photo.png"
    Image.fromarray(np.full((80, 80, 3), 90, np.uint8)).save(png)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (80, 80), (0, 50, 100, 0)).save(cmyk)
    for path in (gray, png, cmyk):
        assert D._decode_scaled_jpeg(path, "RGB", 32, None) is None
        modes: set[str] = set()
        assert D.decode_fitted(path, "RGB", 32, modes=modes).shape == (3, 32, 32)
        with Image.open(path) as image:
            assert modes == {image.mode}
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(gray.read_bytes()[:40])
    with pytest.raises(DataError, match="broken.jpg: unreadable image"):
        D.decode_fitted(broken, "RGB", 32)


def test_prepared_matches_the_in_memory_path_and_shares_the_map(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "src", 120)
    # 48 px sources at 32 px: below twice the size, so no draft decoding: pixels must match exactly
    exact = load_data(str(root), image_size=32, mode="memory", val_fraction=0.2, train_size=60, seed=3)
    prepared = P.prepare(root, 32)
    mapped = load_data(str(root), image_size=32, val_fraction=0.2, train_size=60, seed=3)
    for a, b in ((exact.train, mapped.train), (exact.val, mapped.val), (exact.test, mapped.test)):
        assert torch.equal(a.images, b.gather(torch.arange(len(b))))
        assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(mapped.train.mean, exact.train.mean)
    torch.testing.assert_close(mapped.train.std, exact.train.std)
    # the splits index one mapped array; no copy of it
    assert mapped.train.index is not None and mapped.train.images.data_ptr() == mapped.val.images.data_ptr()
    assert prepared.manifest["classes"] == ["c0", "c1", "c2", "c3"]
    assert len(prepared.manifest["files"]["train"]) == 120 and prepared.manifest["format_version"] == C.FORMAT_VERSION


def test_draft_decoding_is_close_to_a_full_decode(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "src", 40, side=128)
    draft = P.prepare(root, 32).images["train"].astype(np.float64)
    full = P.prepare(root, 32, draft=False).images["train"].astype(np.float64)
    assert 0 < np.abs(draft - full).mean() < 6


# ----------------------------------------------------------------------------- atomic, fresh
@pytest.mark.slow
def test_kill_9_during_prepare_then_again_gives_the_uninterrupted_cache(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "src", 3000, side=96)
    command = [sys.executable, "-c", "from coatsearch.cli import main; main()", "data", "prepare", str(root),
               "--size", "32", "--workers", "2"]
    killed_cache = tmp_path / "killed"
    env = {**os.environ, "COATSEARCH_CACHE": str(killed_cache)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list((killed_cache / "prepared").glob(".*.tmp-*/train.npy")):
        time.sleep(0.01)
    time.sleep(0.15)  # part-way through the decoding
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    final = C.cache_dir_for(root, 32, cache=killed_cache)
    assert not final.exists(), "the prepare finished before the kill; make the folder larger"
    with pytest.raises(OSError):  # nothing usable is left behind...
        C.open_cache(final)
    subprocess.run(command, env=env, check=True, capture_output=True)  # ... and a rerun completes
    clean = P.prepare(root, 32, cache=tmp_path / "clean", progress=False)
    assert cache_files(final) == cache_files(clean.path)
    assert not [p for p in (killed_cache / "prepared").iterdir() if ".tmp-" in p.name]


def test_a_replaced_image_invalidates_the_cache(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "src", 24)
    first = P.prepare(root, 16)
    before = first.images["train"][5].copy()
    victim = sorted(root.rglob("*.jpg"))[5]  # row 5: folders, then files, in order
    Image.new("RGB", (50, 40), (250, 0, 0)).save(victim)
    reopened, why = C.valid_cache(first.path, F.list_source(root).fingerprint(), True)
    assert reopened is None and why == "the source folder changed"
    second = P.prepare(root, 16)
    assert not np.array_equal(second.images["train"][5], before)
    assert second.images["train"][5, 0].mean() > 230 and second.images["train"][5, 1].mean() < 25


def test_bad_caches_are_rebuilt_and_bad_folders_are_one_line_errors(tmp_path: Path, cache: Path) -> None:
    root = jpeg_folder(tmp_path / "src", 24)
    good = cache_files(P.prepare(root, 16).path)
    path = C.cache_dir_for(root, 16)
    # a truncated array
    with open(path / "train.npy", "r+b") as handle:
        handle.truncate(1000)
    assert cache_files(P.prepare(root, 16).path) == good
    # a manifest of another format version
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 0}))
    assert cache_files(P.prepare(root, 16).path) == good
    # an unwritable cache folder
    blocker = tmp_path / "file"
    blocker.write_text("")
    os.environ["COATSEARCH_CACHE"] = str(blocker / "cache")
    with pytest.raises(DataError, match=r"file/cache/prepared: cache folder not writable .*COATSEARCH_CACHE"):
        load_data(str(root), image_size=20)
    os.environ["COATSEARCH_CACHE"] = str(cache)
    # an unreadable image: fail names it; skip leaves it out and says so under fail
    bad = sorted(root.rglob("*.jpg"))[3]
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=rf"{bad}: unreadable image"):
        P.prepare(root, 16)
    skipped = P.prepare(root, 16, on_bad_file="skip")
    assert skipped.manifest["splits"]["train"]["skipped"] == [str(bad)] and len(skipped.labels["train"]) == 23
    with pytest.raises(DataError, match=rf"{bad}: unreadable image \(prepared with on_bad_file: skip\)"):
        P.prepare(root, 16)


def _relabel(path: Path, label: int) -> None:
    labels = np.load(path / "train_labels.npy")
    labels[0] = label
    np.save(path / "train_labels.npy", labels)


def _edit_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del manifest[key]
    (path / "manifest.json").write_text(json.dumps(manifest))


#: Damage that still maps: every array opens, so only the manifest's and the labels' own
#: checks tell the cache from a good one.
DAMAGE = {
    "empty-array": lambda path: (path / "train.npy").write_bytes(b""),
    "manifest-a-list": lambda path: (path / "manifest.json").write_text("[1, 2]"),
    "splits-not-a-mapping": lambda path: _edit_manifest(path, splits="train"),
    "skipped-not-a-list": lambda path: _edit_manifest(
        path, splits={"train": {"count": 24, "skipped": 5}}),
    "no-fingerprint": lambda path: _edit_manifest(path, files=None),
    "label-of-no-class": lambda path: _relabel(path, 7),
    "negative-label": lambda path: _relabel(path, -1),
    "fewer-classes": lambda path: _edit_manifest(path, classes=["c0", "c1"]),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_before_a_trial_reads_it(tmp_path: Path, damage: str) -> None:
    from typer.testing import CliRunner

    from coatsearch.cli import app

    root = jpeg_folder(tmp_path / "src", 24)
    good = cache_files(P.prepare(root, 16).path)
    path = C.cache_dir_for(root, 16)
    DAMAGE[damage](path)
    result = CliRunner().invoke(app, ["data", "info", str(root)])
    assert result.exit_code == 0 and "unusable" in result.output, result.output
    assert cache_files(P.prepare(root, 16).path) == good


def test_a_folder_that_changes_during_prepare_is_decoded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = jpeg_folder(tmp_path / "src", 24)
    decode = P._decode_split
    calls = []

    def changing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:  # someone writes into the folder while the first pass runs
            Image.new("RGB", (50, 40), (0, 250, 0)).save(sorted(root.rglob("*.jpg"))[0])
        return decode(*args, **kwargs)

    monkeypatch.setattr(P, "_decode_split", changing)
    prepared = P.prepare(root, 16)
    assert len(calls) == 2 and prepared.images["train"][0, 1].mean() > 240
    assert prepared.manifest["files"] == F.list_source(root).fingerprint()

    def always(*args, **kwargs):  # type: ignore[no-untyped-def]
        (root / "c0" / f"new{len(calls)}.jpg").write_bytes((root / "c0" / "00000.jpg").read_bytes())
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(P, "_decode_split", always)
    with pytest.raises(DataError, match="kept changing while it was being prepared"):
        P.prepare(root, 16, force=True)


# ----------------------------------------------------------------------------- once per node
SITECUSTOMIZE = """
import os
import coatsearch.data.prepared as P
_decode = P.decode_fitted
def counted(path, *args, **kwargs):
    with open(os.environ["DECODE_LOG"], "a") as log:
        log.write(f"{os.getpid()} {path}\\n")
    return _decode(path, *args, **kwargs)
P.decode_fitted = counted
"""


@pytest.mark.slow
def test_a_concurrent_search_decodes_the_folder_once(tmp_path: Path, cache: Path) -> None:
    root = jpeg_folder(tmp_path / "src", 600, classes=4, side=24)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "decodes.log"
    space = {**TINY_SPACE, "study": "once", "params": {"split": {"choices": [1, 2]}}, "trials": 2, "concurrency": 2,
             "data": {"source": str(root), "train_size": 200, "val_fraction": 0.25},
             "train": {"epochs": 1, "batch_size": 64}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
           "DECODE_LOG": str(log), "COATSEARCH_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-c", "from coatsearch.cli import main; main()", "run",
                             str(tmp_path / "space.yaml"), "--out", str(tmp_path / "run")],
                            env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    decoded = log.read_text().splitlines()
    assert len(decoded) == 600 and len({line.split()[1] for line in decoded}) == 600
    rows = (tmp_path / "run" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all("complete" in r for r in rows[1:])
    # two processes racing for one cache decode it once between them
    log.unlink()
    script = textwrap.dedent(f"""
        from coatsearch.data.prepared import prepare
        prepare({str(root)!r}, 12, workers=1)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    assert len(log.read_text().splitlines()) == 600


# ----------------------------------------------------------------------------- stream, feed
def test_stream_mode_trains_from_files_and_names_a_bad_one(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "src", 80)
    streamed = load_data(str(root), image_size=16, mode="stream", val_fraction=0.25, augment="light")
    mapped = load_data(str(root), image_size=16, val_fraction=0.25)
    assert torch.equal(streamed.val.labels, mapped.val.labels) and streamed.in_channels == 3
    x, _ = streamed.val.read(torch.arange(4))
    assert torch.equal(x, mapped.val.gather(torch.arange(4)))
    config = TrainConfig(epochs=2, batch_size=16, loader_workers=2, amp=False)
    result = fit(tiny_spec(image_size=16), config, streamed, log=lambda _: None)
    assert result.status == "complete" and len(result.epochs) == 2
    bad = Path(streamed.train.paths[2])
    bad.write_bytes(b"broken")
    with pytest.raises(DataError, match=rf"^{bad}: unreadable image"):
        fit(tiny_spec(image_size=16), config, streamed, log=lambda _: None)
    skipping = load_data(str(root), image_size=16, mode="stream", val_fraction=0.25, on_bad_file="skip")
    result = fit(tiny_spec(image_size=16), config.replace(epochs=1), skipping, log=lambda _: None)
    assert result.status == "complete"


def test_loader_workers_repeat_whatever_their_number() -> None:
    data = load_data("fashion-mnist", image_size=16, train_size=200, augment="randaugment")
    order = [torch.arange(i, i + 32) for i in range(0, 192, 32)]

    def run(workers: int) -> list[torch.Tensor]:
        feed = Feed(data.train, workers)
        try:
            return [x for x, _ in feed.batches(order, torch.Generator().manual_seed(1))]
        finally:
            feed.close()

    one, two = run(1), run(2)
    assert all(torch.equal(a, b) for a, b in zip(one, two)) and len(one) == len(order)
    inline = [x for x, _ in Feed(data.train).batches(order, torch.Generator().manual_seed(1))]
    assert inline[0].shape == one[0].shape


def test_cli_data_prepare_and_info(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from coatsearch.cli import app

    root = jpeg_folder(tmp_path / "src", 20)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "info", str(root)])
    assert result.exit_code == 0 and "nothing prepared" in result.output
    result = runner.invoke(app, ["data", "prepare", str(root), "--size", "16"])
    assert result.exit_code == 0 and "20 train images at 16px, 4 classes" in result.output
    result = runner.invoke(app, ["data", "info", str(root)])
    assert "16px" in result.output and "up to date" in result.output and "20 train" in result.output
    result = runner.invoke(app, ["data", "prepare", "fashion-mnist", "--size", "16"])
    assert result.exit_code == 2 and "not an image folder" in result.output


def test_preparing_at_a_draft_scale_loads_no_torch(tmp_path: Path, cache: Path) -> None:
    # 128 px JPEGs at 32 px: the 1/4 draft output is the size, so no resize, no torch (its
    # import is about a third of the command's time on a 20,000-image folder). One worker:
    # the decoding runs in this process, where sys.modules shows what it loaded.
    root = jpeg_folder(tmp_path / "src", 40, side=128)
    script = textwrap.dedent(f"""
        import sys
        from coatsearch.cli import app
        app(["data", "prepare", {str(root)!r}, "--size", "32", "--workers", "1"], standalone_mode=False)
        assert "torch" not in sys.modules
        app(["data", "prepare", {str(root)!r}, "--size", "30", "--workers", "1"], standalone_mode=False)
        assert "torch" in sys.modules  # a resize after the draft decode: torch's, as in memory mode
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "COATSEARCH_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "40 train images at 32px" in result.stdout and "40 train images at 30px" in result.stdout


def test_whether_a_folder_needs_a_resize_is_read_from_its_first_header(tmp_path: Path) -> None:
    draft_sized, resized = jpeg_folder(tmp_path / "a", 2, side=128), jpeg_folder(tmp_path / "b", 2, side=100)
    first = sorted(draft_sized.rglob("*.jpg"))[0]
    assert not D.needs_resize(first, 32, draft=True)  # 128x136 at 1/4: 32x34
    assert D.needs_resize(first, 30, draft=True)
    assert D.needs_resize(first, 32, draft=False)
    assert D.needs_resize(sorted(resized.rglob("*.jpg"))[0], 32, draft=True)  # 100 px: 1/2 gives 50


def test_16_bit_gray_pngs_are_read_scaled_to_8_bits(tmp_path: Path) -> None:
    """A folder of 16-bit grayscale PNGs: one channel, 0..65535 scaled to 0..255 (Pillow's
    own conversion clips them white), and a prepared cache whose manifest says one channel
    (it said three, and the cache just written was refused as unusable)."""
    from coatsearch.data.folder import read_image_folder

    root = tmp_path / "deep"
    expected = {40 * c + 10 * i for c in range(2) for i in range(6)}
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):  # 16-bit values whose 8-bit scale is 40c + 10i
            Image.fromarray(np.full((16, 16), 257 * (40 * c + 10 * i), dtype=np.uint16)).save(root / f"class{c}" / f"{i}.png")
    assert Image.open(root / "class0" / "1.png").mode.startswith("I")
    prepared = P.prepare(root, 16)
    assert prepared.images["train"].shape[1] == 1
    assert set(np.unique(prepared.images["train"]).tolist()) <= expected
    images, _, _, _ = read_image_folder(root, 16)  # data.mode: memory
    assert images.shape[1] == 1 and set(torch.unique(images).tolist()) == expected
    assert int(D.decode_fitted(root / "class1" / "5.png", "L", 16).max()) == 90  # data.mode: stream
    for mode in ("prepared", "memory", "stream"):
        assert load_data(f"imagefolder:{root}", image_size=16, val_fraction=0.25, mode=mode).in_channels == 1
