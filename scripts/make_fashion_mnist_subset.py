"""Build the Fashion-MNIST subset shipped as coatsearch's offline default dataset.

Reads the full IDX files (Debian: ``apt-get install dataset-fashion-mnist``, which puts
them under /usr/share/datasets/fashion-mnist) and writes a stratified, seeded subset,
28x28 uint8 as in the original, to ``coatsearch/datasets/fashion-mnist-subset.npz``:

    python scripts/make_fashion_mnist_subset.py [--source DIR] [--train 10000] [--test 2000]

The same arguments give the same file contents (the stratified draw is seeded).
Fashion-MNIST is (c) 2017 Zalando SE, MIT licence; the notice ships beside the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from coatsearch.data.idx import read_idx_pair
from coatsearch.data.listing import find_idx_files
from coatsearch.data.sources import BUILTIN_FILE, FASHION_MNIST_DIR
from coatsearch.data.splits import stratified_subset

OUT_DIR = Path(__file__).resolve().parent.parent / "coatsearch" / "datasets"


def subset(images_path: Path, labels_path: Path, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx_pair(images_path, labels_path)
    chosen = stratified_subset(labels, size, torch.Generator().manual_seed(seed))
    return images[chosen, 0].numpy(), labels[chosen].numpy().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--train", type=int, default=10_000, help="training images (stratified)")
    parser.add_argument("--test", type=int, default=2_000, help="test images (stratified)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR / BUILTIN_FILE)
    args = parser.parse_args()

    parts = find_idx_files(args.source)
    train_images, train_labels = subset(parts["train_images"], parts["train_labels"], args.train, args.seed)
    test_images, test_labels = subset(parts["test_images"], parts["test_labels"], args.test, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_images=train_images, train_labels=train_labels,
        test_images=test_images, test_labels=test_labels,
    )
    counts = np.bincount(train_labels).tolist()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): "
          f"{len(train_labels)} train (per class {counts}), {len(test_labels)} test")


if __name__ == "__main__":
    main()
