"""Evaluation metrics: DAVIS region similarity J and boundary F, their sequence statistics, and the
interactive-segmentation protocol (simulated clicks, NoC, mIoU-vs-clicks curve and its AUC).

Conventions (all written from the metric definitions, see each function):

* Masks are (H, W) arrays; anything non-zero is foreground. An optional ``void`` mask marks pixels that
  are ignored. The benchmark protocols (`masklet.val.protocols`) pass none: both official evaluators count
  DAVIS's void label 255 as background, so predicting over it is a false positive.
* J and F of two empty masks are 1.0; F is 0.0 when exactly one of the two boundaries is empty.
* ``statistics`` ignores NaN frames.
* Interactive: clicks are (x, y) = (column, row) pixel coordinates plus a positive/negative flag.
"""
from __future__ import annotations

import math
import warnings
from typing import Literal, Optional, Sequence, Union

import cv2
import numpy as np

ArrayLike = Union[np.ndarray, Sequence]


def _as_bool(mask: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) mask, got shape {arr.shape}; pass one object's mask per call")
    return arr if arr.dtype == np.bool_ else arr != 0


def _check_pair(pred: ArrayLike, gt: ArrayLike, void: Optional[ArrayLike] = None):
    pred_b = _as_bool(pred, "pred")
    gt_b = _as_bool(gt, "gt")
    if pred_b.shape != gt_b.shape:
        raise ValueError(f"pred and gt masks differ in size: {pred_b.shape} vs {gt_b.shape}; "
                         "resize the prediction to the annotation's size before scoring")
    void_b = None
    if void is not None:
        void_b = _as_bool(void, "void")
        if void_b.shape != gt_b.shape:
            raise ValueError(f"void mask size {void_b.shape} differs from the gt size {gt_b.shape}")
    return pred_b, gt_b, void_b


# ---------------------------------------------------------------------------------------------------------------
# DAVIS J and F
# ---------------------------------------------------------------------------------------------------------------

def region_similarity(pred: ArrayLike, gt: ArrayLike, void: Optional[ArrayLike] = None) -> float:
    """Region similarity J: the intersection over union of two (H, W) masks.

    Pixels where ``void`` is true are left out of both intersection and union. Two empty masks score 1.0
    (DAVIS convention: correctly predicting that the object is absent is a perfect frame).
    """
    pred_b, gt_b, void_b = _check_pair(pred, gt, void)
    inter = pred_b & gt_b
    union = pred_b | gt_b
    if void_b is not None:
        inter &= ~void_b
        union &= ~void_b
    n_union = int(union.sum())
    if n_union == 0:
        return 1.0
    return int(inter.sum()) / n_union


def boundary_map(mask: ArrayLike) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask, the way DAVIS defines it.

    A pixel is a boundary pixel when its value differs from its right, bottom or bottom-right neighbour.
    Neighbours outside the image count as equal to the pixel itself (edge replication), so the image border
    is not a boundary: a mask covering the whole image has no boundary. Note the map is not symmetric
    around the object: for a filled square it is the ring of the square grown by one pixel up and left.
    """
    m = _as_bool(mask, "mask")
    # Replicating the last row/column makes out-of-image neighbours equal to the pixel, i.e. "no change".
    padded = np.pad(m, ((0, 1), (0, 1)), mode="edge")
    right = padded[:-1, 1:]
    below = padded[1:, :-1]
    below_right = padded[1:, 1:]
    return (m != right) | (m != below) | (m != below_right)


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: the (2r+1, 2r+1) uint8 array of offsets with dx^2 + dy^2 <= r^2.

    Built from the definition rather than cv2.getStructuringElement(MORPH_ELLIPSE), whose ellipse is a
    slightly different pixel set for most radii; the definition is the one the DAVIS F tolerance uses.
    """
    r = int(radius)
    if r < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.uint8)


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Boundary-match tolerance in pixels: ceil(bound_th * image diagonal) if bound_th < 1, else ceil(bound_th)."""
    if bound_th <= 0:
        raise ValueError(f"bound_th must be > 0 (a fraction of the image diagonal, or pixels if >= 1), got {bound_th}")
    if bound_th >= 1:
        return math.ceil(bound_th)
    h, w = shape
    return math.ceil(bound_th * math.hypot(h, w))


def boundary_precision_recall(pred: ArrayLike, gt: ArrayLike, bound_th: float = 0.008,
                              void: Optional[ArrayLike] = None) -> tuple[float, float]:
    """Boundary precision and recall used by `boundary_f_measure` (see there for the conventions)."""
    pred_b, gt_b, void_b = _check_pair(pred, gt, void)
    if void_b is not None:
        # Void pixels are neither object nor background: remove them from both masks before tracing boundaries.
        pred_b = pred_b & ~void_b
        gt_b = gt_b & ~void_b
    radius = boundary_tolerance(gt_b.shape, bound_th)
    pred_bd = boundary_map(pred_b)
    gt_bd = boundary_map(gt_b)
    n_pred = int(pred_bd.sum())
    n_gt = int(gt_bd.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0
    if n_pred == 0:
        return 1.0, 0.0  # nothing predicted: nothing wrong (precision 1) but nothing found (recall 0)
    if n_gt == 0:
        return 0.0, 1.0
    kernel = disk(radius)
    pred_dil = cv2.dilate(pred_bd.astype(np.uint8), kernel) > 0
    gt_dil = cv2.dilate(gt_bd.astype(np.uint8), kernel) > 0
    precision = int((pred_bd & gt_dil).sum()) / n_pred
    recall = int((gt_bd & pred_dil).sum()) / n_gt
    return precision, recall


def boundary_f_measure(pred: ArrayLike, gt: ArrayLike, bound_th: float = 0.008,
                       void: Optional[ArrayLike] = None) -> float:
    """Boundary accuracy F (DAVIS): F-measure of boundary precision and recall under a distance tolerance.

    Boundaries are the one-pixel maps of `boundary_map`. The tolerance radius is `boundary_tolerance`
    (0.008 of the image diagonal, rounded up: 8 px at 480x854). Each boundary map is dilated with a disk of
    that radius; precision = fraction of predicted boundary pixels inside the dilated gt boundary, recall =
    fraction of gt boundary pixels inside the dilated predicted boundary, F = 2PR / (P + R) (0 if P + R = 0).
    Both boundaries empty -> 1.0; exactly one empty -> 0.0 (P or R is 0).
    """
    precision, recall = boundary_precision_recall(pred, gt, bound_th, void)
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def score_sequence(preds: Sequence[ArrayLike], gts: Sequence[ArrayLike],
                   voids: Optional[Sequence[Optional[ArrayLike]]] = None,
                   bound_th: float = 0.008) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of one object over the frames to score: returns two float64 arrays of length T.

    `preds`, `gts` (and `voids`, entries may be None) are aligned lists of (H, W) masks, one per scored frame.
    Which frames to score is the caller's choice (see `VOSVideo.scored_frames` for the DAVIS convention).
    """
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predicted masks for {len(gts)} gt masks; pass one of each per scored frame")
    if voids is not None and len(voids) != len(gts):
        raise ValueError(f"got {len(voids)} void masks for {len(gts)} gt masks")
    j = np.empty(len(gts), dtype=np.float64)
    f = np.empty(len(gts), dtype=np.float64)
    for t, (p, g) in enumerate(zip(preds, gts)):
        v = None if voids is None else voids[t]
        j[t] = region_similarity(p, g, v)
        f[t] = boundary_f_measure(p, g, bound_th, v)
    return j, f


def _decay_bins(n: int, n_bins: int, binning: str) -> list[np.ndarray]:
    idx = np.arange(n)
    if binning == "split":
        # Fewer frames than bins would leave the last bin empty; one frame per bin keeps the decay defined.
        return list(np.array_split(idx, max(1, min(n_bins, n))))
    if binning == "davis":
        # The official DAVIS toolkit's bins: n_bins + 1 edges spread evenly over frames 1..n (1-based, rounded),
        # and each bin includes both of its edges, so neighbouring bins share a frame.
        edges = (np.round(np.linspace(1, n, n_bins + 1) + 1e-10) - 1).astype(int)
        return [idx[edges[i]:edges[i + 1] + 1] for i in range(n_bins)]
    raise ValueError(f"binning must be 'split' or 'davis', got {binning!r}")


def statistics(values: ArrayLike, threshold: float = 0.5, n_bins: int = 4,
               binning: Literal["split", "davis"] = "davis") -> dict[str, float]:
    """Mean, recall and decay of one object's per-frame J (or F) values, NaN frames ignored.

    mean: mean over frames. recall: fraction of frames with value > `threshold` (strictly).
    decay: frames are cut into `n_bins` groups in frame order and decay = mean of the first group - mean of
    the last group (positive = the object is lost over time). binning="davis" (default) uses the official
    DAVIS toolkit's bins, so published DAVIS decays are reproduced: edges round(linspace(1, T, n_bins + 1)) - 1
    and each bin includes both of its edges, so neighbouring bins share a frame (for T = 8 the bins are frames
    0-2, 2-4, 4-5, 5-7; a 1-frame sequence has decay 0). binning="split" cuts disjoint groups with
    np.array_split (sizes differ by at most one; min(n_bins, T) groups), which gives slightly different decays
    on short sequences. Empty or all-NaN input gives NaN for all three.

    Two differences from the toolkit remain on purpose. A NaN frame is left out of the recall here, while the
    toolkit counts it as a miss (NaN > 0.5 is False); J and F are never NaN in `masklet val`, so this only
    matters to callers passing NaN themselves. And the toolkit's `db_statistics` casts its bin edges to uint8,
    which wraps past 255: for 256+ frames its decay is NaN or averages the wrong frames (T = 300: the last edge
    299 becomes 43, so the last bin is empty); masklet keeps integer edges and gives the intended decay.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    nan = float("nan")
    valid = ~np.isnan(v)
    if not valid.any():
        return {"mean": nan, "recall": nan, "decay": nan}
    mean = float(v[valid].mean())
    recall = float((v[valid] > threshold).mean())
    bins = _decay_bins(len(v), n_bins, binning)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty or all-NaN bin is a NaN decay, not a warning
        first = np.nanmean(v[bins[0]]) if len(bins[0]) else nan
        last = np.nanmean(v[bins[-1]]) if len(bins[-1]) else nan
    return {"mean": mean, "recall": recall, "decay": float(first - last)}


# ---------------------------------------------------------------------------------------------------------------
# Interactive segmentation protocol
# ---------------------------------------------------------------------------------------------------------------

def _inner_distance(error: np.ndarray) -> np.ndarray:
    # The 1-pixel zero border makes the image edge count as the region's boundary, so a region touching the
    # edge is not clicked right on the edge.
    padded = np.pad(error.astype(np.uint8), 1, mode="constant", constant_values=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def next_click(pred: ArrayLike, gt: ArrayLike, first: bool = False,
               void: Optional[ArrayLike] = None) -> Optional[tuple[int, int, bool]]:
    """Simulated user click for the standard interactive-segmentation protocol.

    The error regions are the false negatives (gt and not pred) and false positives (pred and not gt), void
    pixels excluded. Each gets a Euclidean distance transform (exact, to the nearest non-error pixel, with
    the image border counting as non-error). The click goes to the error pixel farthest from its region's
    boundary: positive (add) when the largest FN distance >= the largest FP distance, else negative (remove).
    Ties between pixels go to the first maximum in row-major order (smallest y, then smallest x).
    `first=True` ignores `pred` (the first click is placed as if nothing were predicted).

    Returns (x, y, is_positive) with x the column and y the row, or None when there is no error pixel left.
    """
    pred_b, gt_b, void_b = _check_pair(pred, gt, void)
    if first:
        pred_b = np.zeros_like(gt_b)
    fn = gt_b & ~pred_b
    fp = pred_b & ~gt_b
    if void_b is not None:
        fn &= ~void_b
        fp &= ~void_b
    if not fn.any() and not fp.any():
        return None
    fn_dist = _inner_distance(fn)
    fp_dist = _inner_distance(fp)
    fn_max = float(fn_dist.max())
    fp_max = float(fp_dist.max())
    positive = fn_max >= fp_max
    dist = fn_dist if positive else fp_dist
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)  # argmax returns the first maximum, row-major
    return int(x), int(y), bool(positive)


def noc(ious_per_click: ArrayLike, threshold: float, max_clicks: Optional[int] = None) -> int:
    """Number of clicks needed to reach IoU >= `threshold`.

    `ious_per_click[k]` is the IoU after k + 1 clicks. Only the first `max_clicks` entries count (all of
    them if None). Convention (standard NoC): a sample that never reaches the threshold counts as
    `max_clicks` clicks (len(ious_per_click) when max_clicks is None).
    """
    ious = np.asarray(ious_per_click, dtype=np.float64).reshape(-1)
    if max_clicks is None:
        max_clicks = len(ious)
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    ious = ious[:max_clicks]
    reached = np.flatnonzero(ious >= threshold)
    return int(reached[0]) + 1 if len(reached) else int(max_clicks)


def _as_click_matrix(per_sample_ious: Union[ArrayLike, Sequence[Sequence[float]]]) -> np.ndarray:
    rows = [np.asarray(r, dtype=np.float64).reshape(-1) for r in per_sample_ious]
    if not rows:
        raise ValueError("no samples: per_sample_ious is empty")
    k = max(len(r) for r in rows)
    if any(len(r) == 0 for r in rows):
        raise ValueError("a sample has no IoU values; every sample needs at least the IoU after its first click")
    out = np.empty((len(rows), k), dtype=np.float64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
        out[i, len(r):] = r[-1]  # a sample that stopped early (e.g. perfect mask) keeps its last IoU
    return out


def miou_curve(per_sample_ious: Union[ArrayLike, Sequence[Sequence[float]]]) -> np.ndarray:
    """mIoU after k clicks for k = 1..K: the mean over samples of an (S, K) IoU matrix, shape (K,).

    Rows may have different lengths: a shorter row is extended with its last value, i.e. a sample that
    stopped clicking early is assumed to keep its last mask. NaN entries are ignored in the mean.
    """
    mat = _as_click_matrix(per_sample_ious)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(mat, axis=0)


def auc(curve: ArrayLike) -> float:
    """Normalised area under the mIoU-vs-clicks curve: the mean of mIoU@k over k = 1..K (in [0, 1]).

    This is the rectangle rule with one unit of width per click, divided by K; it weights every click count
    equally, including the first.
    """
    c = np.asarray(curve, dtype=np.float64).reshape(-1)
    if len(c) == 0:
        raise ValueError("the curve is empty; it needs mIoU after at least one click")
    return float(np.nanmean(c))


def interactive_summary(per_sample_ious: Union[ArrayLike, Sequence[Sequence[float]]],
                        thresholds: Sequence[float] = (0.85, 0.9), max_clicks: Optional[int] = None,
                        at_clicks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Summary of an interactive run: mean NoC@t and NoF@t (samples not reaching t within max_clicks) for each
    threshold, mIoU@k for each k in `at_clicks` (when k <= K), and the AUC of the mIoU curve.

    Keys look like "NoC@85", "NoF@85", "mIoU@1", "AUC". max_clicks defaults to the number of columns K.
    """
    mat = _as_click_matrix(per_sample_ious)
    k_max = mat.shape[1] if max_clicks is None else int(max_clicks)
    mat = mat[:, :k_max]
    out: dict[str, float] = {"samples": float(mat.shape[0])}
    for t in thresholds:
        name = f"{round(t * 100):g}" if t <= 1 else f"{t:g}"
        counts = [noc(row, t, k_max) for row in mat]
        out[f"NoC@{name}"] = float(np.mean(counts))
        out[f"NoF@{name}"] = float(sum(1 for row in mat if not (row >= t).any()))
    curve = miou_curve(mat)
    for k in at_clicks:
        if 1 <= k <= len(curve):
            out[f"mIoU@{k}"] = float(curve[k - 1])
    out["AUC"] = auc(curve)
    return out
