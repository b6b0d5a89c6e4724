"""COCO run-length encoding (RLE) of binary masks, without pycocotools.

COCO's RLE walks the mask in column-major (Fortran) order, i.e. down the first column, then the second,
and stores the lengths of alternating runs, always starting with a run of zeros (so a mask whose first
pixel is set starts with a 0). The uncompressed form keeps the counts as a list of ints; the compressed
form (what `pycocotools.mask.encode` returns, decoded to str) packs them into an ASCII string with the
scheme of `rleToString` in COCO's maskApi.c:

* from the fourth count on (index i > 2), the value stored is counts[i] - counts[i - 2] (runs of the same
  colour tend to have similar lengths, so the deltas are small; they may be negative);
* each value is written as little-endian groups of 5 bits, each group in one character: bit 5 (0x20)
  says "more groups follow", bit 4 (0x10) of the last group is the sign (two's complement), and 48 is added
  to make the character printable ('0' .. 'o').
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "coco_rle_to_mask",
    "decode_counts_string",
    "encode_counts_string",
    "mask_to_coco_rle",
    "mask_to_rle_uncompressed",
    "masks_to_rle_uncompressed",
    "rle_area",
    "rle_uncompressed_to_mask",
]


def _as_bool_numpy(mask: Any) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _counts_from_flat(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat bool vector (L,), starting with the run of zeros (possibly empty)."""
    n = flat.size
    if n == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return counts


def mask_to_rle_uncompressed(mask: np.ndarray | torch.Tensor) -> dict:
    """Uncompressed COCO RLE of one mask (H, W) (bool or 0/1): {"size": [H, W], "counts": [int, ...]}.

    Counts run in column-major order and start with the number of zeros; they sum to H * W.
    """
    m = _as_bool_numpy(mask)
    h, w = m.shape
    # ravel(order="F") is column-major: exactly the transpose-then-flatten COCO specifies.
    return {"size": [int(h), int(w)], "counts": _counts_from_flat(m.ravel(order="F"))}


def rle_uncompressed_to_mask(rle: dict) -> np.ndarray:
    """Decode an uncompressed RLE {"size": [H, W], "counts": [int, ...]} into a bool array (H, W)."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("RLE counts must be non-negative")
    total = int(counts.sum())
    if total != h * w:
        raise ValueError(f"RLE counts sum to {total}, but size {h}x{w} needs {h * w}")
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T.copy()


def encode_counts_string(counts: Sequence[int]) -> str:
    """Pack RLE counts into COCO's compressed ASCII string (maskApi.c `rleToString`)."""
    chars: list[str] = []
    counts = [int(c) for c in counts]
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        while True:
            c = x & 0x1F
            x >>= 5  # Python's >> is arithmetic, like the C code on a signed long
            # Stop once the remaining bits are pure sign extension of the group's bit 4.
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
            if not more:
                break
    return "".join(chars)


def decode_counts_string(s: str | bytes) -> list[int]:
    """Unpack COCO's compressed RLE string into the list of counts (maskApi.c `rleFrString`)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated RLE string: the last value has its continuation bit set")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {s[p]!r} in RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)  # sign-extend, as `x |= -1 << 5*k` in C
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_to_coco_rle(mask: np.ndarray | torch.Tensor) -> dict:
    """Compressed COCO RLE of one mask (H, W): {"size": [H, W], "counts": str}, the JSON-ready form of
    `pycocotools.mask.encode` (whose bytes counts decode to this str)."""
    rle = mask_to_rle_uncompressed(mask)
    return {"size": rle["size"], "counts": encode_counts_string(rle["counts"])}


def _counts_list(rle: dict) -> list[int]:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return decode_counts_string(counts)
    return [int(c) for c in counts]


def coco_rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE whose counts are either a compressed str/bytes or a list of ints -> bool (H, W)."""
    return rle_uncompressed_to_mask({"size": rle["size"], "counts": _counts_list(rle)})


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of an RLE (either counts form): the sum of the odd-indexed runs."""
    return int(sum(_counts_list(rle)[1::2]))


def _changes_torch(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask index (K,) and column-major position (K,) of every run start after the first, for bool masks
    (N, H, W) on any device, in no particular order.

    Works in the natural layout instead of materialising the transposed batch (the slowest step for large
    masks): within a column, pixel (i + 1, j) differs from (i, j) -> position j * H + i + 1; across columns,
    the top of column j + 1 differs from the bottom of column j -> position (j + 1) * H.
    """
    _, h, _ = masks.shape
    b_in, i_in, j_in = (masks[:, 1:, :] != masks[:, :-1, :]).nonzero(as_tuple=True)
    b_x, j_x = (masks[:, 0, 1:] != masks[:, -1, :-1]).nonzero(as_tuple=True)
    return torch.cat([b_in, b_x]), torch.cat([j_in * h + i_in + 1, (j_x + 1) * h])


def _changes_numpy(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_changes_torch` for a CPU bool array (N, H, W); numpy's flatnonzero beats torch.nonzero on CPU."""
    _, h, w = masks.shape
    empty = np.zeros(0, dtype=np.int64)
    b_in = i_in = j_in = b_x = j_x = empty
    if h > 1:  # the divisors below are 0 for single-row / single-column masks
        flat_in = np.flatnonzero(masks[:, 1:, :] != masks[:, :-1, :])
        b_in, rem = np.divmod(flat_in, (h - 1) * w)
        i_in, j_in = np.divmod(rem, w)
    if w > 1:
        b_x, j_x = np.divmod(np.flatnonzero(masks[:, 0, 1:] != masks[:, -1, :-1]), w - 1)
    return np.concatenate([b_in, b_x]), np.concatenate([j_in * h + i_in + 1, (j_x + 1) * h])


def masks_to_rle_uncompressed(masks: torch.Tensor, backend: str = "auto") -> list[dict]:
    """Uncompressed COCO RLEs of a batch of masks (N, H, W) (bool tensor, any device), one dict per mask.

    Run boundaries of all masks are found in one vectorised pass, so only the change positions (as many as
    boundary pixels) leave the device; the final split into per-mask lists is a Python loop.
    backend: "torch" works on the masks' device, "numpy" on the CPU (faster there), "auto" picks numpy for
    CPU tensors and torch otherwise. All give identical results.
    """
    if backend not in ("auto", "torch", "numpy"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'numpy', got {backend!r}")
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {tuple(masks.shape)}")
    n, h, w = masks.shape
    size = [int(h), int(w)]
    if n == 0:
        return []
    if h * w == 0:
        return [{"size": size, "counts": []} for _ in range(n)]
    masks = masks.bool()
    if backend == "numpy" or (backend == "auto" and masks.device.type == "cpu"):
        batch, pos = _changes_numpy(masks.cpu().numpy())
        # One sort puts the changes in (mask, position) order; the key fits int64 for any realistic size.
        pos = pos[np.argsort(batch * (h * w) + pos, kind="stable")]
        per_mask = np.bincount(batch, minlength=n).tolist()
    else:
        batch_t, pos_t = _changes_torch(masks)
        pos = pos_t[torch.sort(batch_t * (h * w) + pos_t).indices].cpu().numpy()
        per_mask = torch.bincount(batch_t, minlength=n).cpu().tolist()
    starts_with_one = masks[:, 0, 0].cpu().tolist()
    out: list[dict] = []
    offset = 0
    for i in range(n):
        k = per_mask[i]
        bounds = np.concatenate(([0], pos[offset:offset + k], [h * w]))
        offset += k
        counts = np.diff(bounds).tolist()
        if starts_with_one[i]:
            counts.insert(0, 0)
        out.append({"size": size, "counts": counts})
    return out
