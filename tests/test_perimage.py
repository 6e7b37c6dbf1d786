"""coatsearch.perimage: per-image correctness as a results cell."""

from __future__ import annotations

import numpy as np
import pytest

from coatsearch import perimage


@pytest.mark.parametrize("size", [1, 13, 1000])
def test_a_cell_round_trips_the_bits_in_order(size):
    rng = np.random.default_rng(size)
    bits, labels = rng.random(size) < 0.8, rng.integers(0, 10, size)
    cell = perimage.encode(bits, labels)
    back = perimage.decode(cell)
    assert back is not None and back.bits.dtype == bool
    np.testing.assert_array_equal(back.bits, bits)
    assert back.accuracy == pytest.approx(bits.mean())
    assert back.fingerprint == perimage.fingerprint(labels)
    if size == 1000:  # small enough to live in a CSV cell
        assert len(cell) < 200


def test_only_cells_of_one_set_in_one_order_make_a_matrix():
    labels = np.arange(20) % 10
    a, b = perimage.encode(np.ones(20), labels), perimage.encode(np.zeros(20), labels)
    np.testing.assert_array_equal(perimage.matrix([a, b]), np.stack([np.ones(20), np.zeros(20)]))
    reordered = perimage.encode(np.ones(20), labels[::-1])
    assert perimage.fingerprint(labels) != perimage.fingerprint(labels[::-1])
    assert perimage.matrix([a, reordered]) is None
    assert perimage.matrix([a, perimage.encode(np.ones(19), labels[:19])]) is None
    assert perimage.matrix([a, float("nan")]) is None  # a trial without the record
    assert perimage.matrix([]) is None


@pytest.mark.parametrize("cell", [None, float("nan"), "", "2:3:abc:AAA=", "1:8:abc:not base64!", "1:16:abc:AA==", "1:x:abc:AA=="])
def test_empty_or_foreign_cells_read_as_missing(cell):
    assert perimage.decode(cell) is None
