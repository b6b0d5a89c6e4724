"""COCO RLE: hand-computed counts and strings, round trips, the batched torch encoder, pycocotools."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from masklet.utils.rle import (
    coco_rle_to_mask,
    decode_counts_string,
    encode_counts_string,
    mask_to_coco_rle,
    mask_to_rle_uncompressed,
    masks_to_rle_uncompressed,
    rle_area,
    rle_uncompressed_to_mask,
)


def hand_masks() -> list[np.ndarray]:
    out = [np.zeros((4, 5), bool), np.ones((4, 5), bool)]
    for r, c in [(0, 0), (0, 4), (3, 0), (3, 4)]:  # single pixel in each corner
        m = np.zeros((4, 5), bool)
        m[r, c] = True
        out.append(m)
    stripes_h = np.zeros((6, 7), bool)
    stripes_h[::2] = True  # horizontal stripes: every column alternates
    stripes_v = np.zeros((6, 7), bool)
    stripes_v[:, 1::2] = True  # vertical stripes: whole columns
    checker = (np.add.outer(np.arange(5), np.arange(3)) % 2).astype(bool)
    out += [stripes_h, stripes_v, checker, np.ones((1, 1), bool), np.zeros((1, 1), bool), np.ones((1, 9), bool)]
    return out


def random_masks(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for density in (0.02, 0.5, 0.98):
        h, w = rng.integers(1, 40, size=2)
        out.append(rng.random((h, w)) < density)
    # blobby masks with long runs, which make large counts (multi-character values in the string)
    big = np.zeros((120, 90), bool)
    big[10:100, 20:70] = True
    big[50:60, 30:40] = False
    out.append(big)
    return out


# ----------------------------------------------------------------------------- uncompressed


def test_known_3x3_counts():
    mask = np.array([[0, 1, 0], [0, 1, 1], [1, 0, 0]], bool)
    # Column-major walk: col 0 = 0,0,1; col 1 = 1,1,0; col 2 = 0,1,0
    # -> 0 0 | 1 1 1 | 0 0 | 1 | 0 -> runs 2, 3, 2, 1, 1
    rle = mask_to_rle_uncompressed(mask)
    assert rle == {"size": [3, 3], "counts": [2, 3, 2, 1, 1]}
    assert np.array_equal(rle_uncompressed_to_mask(rle), mask)
    assert rle_area(rle) == 4


def test_counts_start_with_zero_run_and_edge_cases():
    # first pixel set: the zero run at the start is empty
    assert mask_to_rle_uncompressed(np.array([[1, 1], [1, 0]], bool))["counts"] == [0, 3, 1]
    assert mask_to_rle_uncompressed(np.zeros((2, 3), bool))["counts"] == [6]
    assert mask_to_rle_uncompressed(np.ones((2, 3), bool))["counts"] == [0, 6]
    # bottom-right pixel is the last one in column-major order
    m = np.zeros((2, 3), bool)
    m[1, 2] = True
    assert mask_to_rle_uncompressed(m)["counts"] == [5, 1]
    # top-right pixel: after the first two columns (4 pixels)
    m = np.zeros((2, 3), bool)
    m[0, 2] = True
    assert mask_to_rle_uncompressed(m)["counts"] == [4, 1, 1]
    # a torch tensor and a 0/1 integer array work too
    assert mask_to_rle_uncompressed(torch.tensor([[0, 1]]))["counts"] == [1, 1]
    assert mask_to_rle_uncompressed(np.array([[0, 1]], np.uint8))["size"] == [1, 2]


@pytest.mark.parametrize("mask", hand_masks() + random_masks(0) + random_masks(1), ids=lambda m: str(m.shape))
def test_round_trips(mask):
    rle = mask_to_rle_uncompressed(mask)
    assert sum(rle["counts"]) == mask.size
    assert all(c > 0 for c in rle["counts"][1:])  # only the first run may be empty
    back = rle_uncompressed_to_mask(rle)
    assert back.dtype == bool and back.shape == mask.shape
    assert np.array_equal(back, mask)
    coco = mask_to_coco_rle(mask)
    assert isinstance(coco["counts"], str) and coco["size"] == [mask.shape[0], mask.shape[1]]
    assert decode_counts_string(coco["counts"]) == rle["counts"]
    assert np.array_equal(coco_rle_to_mask(coco), mask)
    assert np.array_equal(coco_rle_to_mask(rle), mask)
    assert np.array_equal(coco_rle_to_mask({"size": coco["size"], "counts": coco["counts"].encode()}), mask)
    assert rle_area(rle) == rle_area(coco) == int(mask.sum())


def test_decode_rejects_inconsistent_counts():
    with pytest.raises(ValueError, match="sum"):
        rle_uncompressed_to_mask({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError):
        decode_counts_string("T")  # continuation bit set on the last character
    with pytest.raises(ValueError):
        decode_counts_string("2 3")  # space is below '0'


# ----------------------------------------------------------------------------- compressed string codec


@pytest.mark.parametrize(
    "counts, expected",
    [
        # Small non-negative values fit one 5-bit group whose bit 4 is clear: chr(48 + v).
        ([9], "9"),
        ([0, 9], "09"),
        ([15], "?"),  # 48 + 15 = 63
        # 16 has bit 4 set, which would read as the sign, so a second group (0) must follow:
        # first char 48 + (16 | 0x20) = 96 '`', then '0'.
        ([16], "`0"),
        # 31: same reason; 48 + (31 | 0x20) = 111 'o', then '0'.
        ([31], "o0"),
        # 32 = 0b1_00000: low group 0 with continuation -> 48 + 32 = 80 'P', then group 1 -> '1'.
        ([32], "P1"),
        # 100 = 0b11_00100: low group 4 + continuation -> 48 + 36 = 84 'T', then 3 -> '3'.
        ([100], "T3"),
        # The 3x3 example [2, 3, 2, 1, 1]: the first three are written as is ("232"); from index 3 on the
        # delta to counts[i - 2] is written: 1 - 3 = -2 -> low 5 bits 30 (sign bit set, rest all ones, so no
        # continuation) -> 48 + 30 = 78 'N'; 1 - 2 = -1 -> 31 -> 79 'O'.
        ([2, 3, 2, 1, 1], "232NO"),
        # Index 2 is NOT delta-coded (i > 2 only): [5, 100, 5, 100] -> '5', 'T3', '5', delta 0 -> '0'.
        ([5, 100, 5, 100], "5T350"),
        # [0, 20, 4, 3]: '0'; 20 = 0b10100 has bit 4 set -> 48 + (20 | 0x20) = 100 'd', then '0'; '4';
        # index 3 stores 3 - 20 = -17: low group -17 & 31 = 15 (bit 4 clear, yet more bits follow since
        # -17 >> 5 = -1 != 0) -> 48 + (15 | 0x20) = 95 '_'; remaining -1 -> 31, sign bit set, done -> 'O'.
        ([0, 20, 4, 3], "0d04_O"),
    ],
)
def test_counts_string_known_values(counts, expected):
    assert encode_counts_string(counts) == expected
    assert decode_counts_string(expected) == counts
    assert decode_counts_string(expected.encode("ascii")) == counts


def test_counts_string_round_trip_random():
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = rng.integers(0, 5000, size=rng.integers(1, 30)).tolist()
        counts = [counts[0]] + [c + 1 for c in counts[1:]]
        s = encode_counts_string(counts)
        assert all("0" <= ch <= "o" for ch in s)
        assert decode_counts_string(s) == counts


# ----------------------------------------------------------------------------- batched torch encoder


BACKENDS = ["auto", "torch", "numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_encoder_matches_single(backend):
    masks = [m for m in hand_masks() if m.shape == (4, 5)]
    rng = np.random.default_rng(3)
    masks += [rng.random((4, 5)) < p for p in (0.1, 0.5, 0.9)]
    batch = torch.from_numpy(np.stack(masks))
    out = masks_to_rle_uncompressed(batch, backend=backend)
    assert len(out) == len(masks)
    for rle, m in zip(out, masks):
        assert rle == mask_to_rle_uncompressed(m)
        assert np.array_equal(rle_uncompressed_to_mask(rle), m)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_encoder_larger_random_and_empty(backend):
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(16, 37, 29, generator=g) > torch.rand(16, 1, 1, generator=g)
    batch[0] = False
    batch[1] = True
    batch[2] = False
    batch[2, :, 5] = True  # one full column: a change exactly at a column boundary on both sides
    batch[3] = False
    batch[3, -1, 3] = batch[3, 0, 4] = True  # bottom of column 3 and top of column 4 form one run
    out = masks_to_rle_uncompressed(batch, backend=backend)
    assert out[0]["counts"] == [37 * 29]
    assert out[1]["counts"] == [0, 37 * 29]
    assert out[2]["counts"] == [5 * 37, 37, 23 * 37]
    assert out[3]["counts"] == [4 * 37 - 1, 2, 29 * 37 - 4 * 37 - 1]
    for rle, m in zip(out, batch.numpy()):
        assert rle == mask_to_rle_uncompressed(m)
    assert masks_to_rle_uncompressed(torch.zeros(0, 4, 4, dtype=torch.bool), backend=backend) == []
    with pytest.raises(ValueError):
        masks_to_rle_uncompressed(torch.zeros(4, 4, dtype=torch.bool), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (1, 1), (2, 2)])
def test_batched_encoder_thin_masks(backend, shape):
    rng = np.random.default_rng(sum(shape))
    masks = rng.random((12, *shape)) < 0.5
    masks[0] = True
    out = masks_to_rle_uncompressed(torch.from_numpy(masks), backend=backend)
    assert out == [mask_to_rle_uncompressed(m) for m in masks]


def test_batched_encoder_bad_backend():
    with pytest.raises(ValueError):
        masks_to_rle_uncompressed(torch.zeros(1, 2, 2, dtype=torch.bool), backend="cuda")


# ----------------------------------------------------------------------------- pycocotools (optional)


def test_cross_check_with_pycocotools():
    mask_util = pytest.importorskip(
        "pycocotools.mask",
        reason="pycocotools is not installed (pip install pycocotools); the hand-computed cases above cover the format")
    for m in hand_masks() + random_masks(5):
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = mask_to_coco_rle(m)
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert ours["size"] == list(ref["size"])
        assert rle_area(ours) == int(mask_util.area(ref))
        assert np.array_equal(coco_rle_to_mask({"size": ref["size"], "counts": ref["counts"]}), m)
