"""Result tables of `masklet val`: per-object / per-video / summary rows, aligned text output, CSV and JSON
files, and the mIoU-vs-clicks plot (drawn with cv2; matplotlib is not a dependency).

Rows are plain dicts (column name -> value) so that any runner can build, print and save them.
Missing values (NaN) print as "-", are written as an empty CSV cell and as JSON null.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence, Union

import numpy as np

from .metrics import interactive_summary, noc, statistics  # noqa: F401  (interactive_summary re-exported)

PathLike = Union[str, Path]

VOS_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]


@dataclass
class ObjectScores:
    """Per-frame J and F of one object in one video (the scored frames only, in frame order).

    prompt_frame: the frame the object was prompted on (its first appearance), kept for the tables.
    """

    video: str
    object_id: int
    j: Sequence[float]
    f: Sequence[float]
    prompt_frame: Optional[int] = None


def _nanmean(values: Iterable[float]) -> float:
    v = np.asarray([float(x) if x is not None else math.nan for x in values], dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


def object_row(scores: ObjectScores, binning: Literal["split", "davis"] = "davis") -> dict[str, Any]:
    """One per-object row: video, object, frames, prompt frame and the DAVIS statistics of J and F."""
    js = statistics(scores.j, binning=binning)
    fs = statistics(scores.f, binning=binning)
    row: dict[str, Any] = {"video": scores.video, "object": int(scores.object_id), "frames": len(scores.j)}
    if scores.prompt_frame is not None:
        row["prompt_frame"] = int(scores.prompt_frame)
    row.update({
        "J&F-Mean": (js["mean"] + fs["mean"]) / 2,  # NaN when either is missing
        "J-Mean": js["mean"], "J-Recall": js["recall"], "J-Decay": js["decay"],
        "F-Mean": fs["mean"], "F-Recall": fs["recall"], "F-Decay": fs["decay"],
    })
    return row


def per_object_table(scores: Iterable[ObjectScores], binning: Literal["split", "davis"] = "davis") -> list[dict]:
    """Per-object rows (see `object_row`), in the order given."""
    return [object_row(s, binning) for s in scores]


def per_video_table(object_rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per-video rows: each VOS column averaged over the video's objects, videos in first-seen order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in object_rows:
        groups.setdefault(r["video"], []).append(r)
    rows = []
    for video, rs in groups.items():
        row: dict[str, Any] = {"video": video, "objects": len(rs)}
        row.update({c: _nanmean(r[c] for r in rs) for c in VOS_COLUMNS})
        rows.append(row)
    return rows


def summary(object_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Dataset summary, DAVIS style: every statistic is averaged over all objects of all videos (not per video
    first); J&F-Mean = (J-Mean + F-Mean) / 2."""
    out: dict[str, Any] = {"videos": len({r["video"] for r in object_rows}), "objects": len(object_rows)}
    for c in VOS_COLUMNS[1:]:
        out[c] = _nanmean(r[c] for r in object_rows)
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2  # NaN propagates when either is missing
    return {k: out[k] for k in ["videos", "objects"] + VOS_COLUMNS}


def interactive_table(names: Sequence[str], per_sample_ious: Sequence[Sequence[float]],
                      thresholds: Sequence[float] = (0.85, 0.9), max_clicks: Optional[int] = None) -> list[dict]:
    """Per-sample rows of an interactive run: name, IoU after the first and last click, NoC@t per threshold."""
    if len(names) != len(per_sample_ious):
        raise ValueError(f"{len(names)} names for {len(per_sample_ious)} samples")
    rows = []
    for name, ious in zip(names, per_sample_ious):
        ious = list(ious)[:max_clicks] if max_clicks else list(ious)
        k = max_clicks or len(ious)
        row: dict[str, Any] = {"sample": name, "clicks": len(ious),
                               "IoU@1": float(ious[0]) if ious else math.nan,
                               f"IoU@{len(ious)}": float(ious[-1]) if ious else math.nan}
        for t in thresholds:
            row[f"NoC@{round(t * 100):g}"] = noc(ious, t, k) if ious else k
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Text, CSV and JSON output
# ---------------------------------------------------------------------------------------------------------------

def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _columns(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]]) -> list[str]:
    if columns is not None:
        return list(columns)
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    return cols


def _cell(v: Any, precision: int) -> str:
    if _is_missing(v):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{precision}f}"
    return str(v)


def format_table(rows: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], columns: Optional[Sequence[str]] = None,
                 precision: int = 3, title: Optional[str] = None) -> str:
    """Rows (or one summary dict) as an aligned plain-text table: numbers right-aligned, text left-aligned."""
    if isinstance(rows, Mapping):
        rows = [rows]
    cols = _columns(rows, columns)
    cells = [[_cell(r.get(c), precision) for c in cols] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float, np.integer, np.floating)) or _is_missing(r.get(c)) for r in rows)
               for c in cols]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    lines = [] if title is None else [title]
    lines.append(fmt(cols))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(row) for row in cells)
    return "\n".join(lines)


def print_table(rows: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], columns: Optional[Sequence[str]] = None,
                precision: int = 3, title: Optional[str] = None) -> None:
    """Print `format_table(...)`."""
    print(format_table(rows, columns, precision, title))


def _plain(v: Any) -> Any:
    # numpy scalars/arrays and NaN are not JSON; NaN becomes null so the file stays strict JSON.
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) or math.isinf(v) else float(v)
    return v


def write_csv(rows: Sequence[Mapping[str, Any]], path: PathLike, columns: Optional[Sequence[str]] = None) -> Path:
    """Write rows to a CSV file (header = columns; NaN/None as empty cells; floats at full precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows, columns)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for r in rows:
            writer.writerow(["" if _is_missing(r.get(c)) else _plain(r.get(c)) for c in cols])
    return path


def write_json(data: Any, path: PathLike) -> Path:
    """Write rows / a summary / any nesting of them as strict JSON (NaN -> null, numpy -> Python)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(data), indent=2, allow_nan=False) + "\n")
    return path


def write_vos_report(out_dir: PathLike, object_rows: Sequence[Mapping[str, Any]],
                     video_rows: Optional[Sequence[Mapping[str, Any]]] = None,
                     summary_row: Optional[Mapping[str, Any]] = None,
                     meta: Optional[Mapping[str, Any]] = None) -> dict[str, Path]:
    """Write per_object.csv, per_video.csv, summary.csv and results.json (all three tables) into `out_dir`.

    video_rows and summary_row are computed from object_rows when not given. `meta` (run settings) is stored
    in results.json under "meta". Returns {name: path}.
    """
    out = Path(out_dir)
    video_rows = per_video_table(object_rows) if video_rows is None else video_rows
    summary_row = summary(object_rows) if summary_row is None else summary_row
    data: dict[str, Any] = {"summary": summary_row, "per_video": video_rows, "per_object": object_rows}
    if meta is not None:
        data["meta"] = meta
    return {
        "per_object": write_csv(object_rows, out / "per_object.csv"),
        "per_video": write_csv(video_rows, out / "per_video.csv"),
        "summary": write_csv([summary_row], out / "summary.csv"),
        "json": write_json(data, out / "results.json"),
    }


def write_interactive_report(out_dir: PathLike, sample_rows: Sequence[Mapping[str, Any]],
                             summary_row: Mapping[str, Any], curve: Sequence[float],
                             per_sample_ious: Optional[Sequence[Sequence[float]]] = None,
                             meta: Optional[Mapping[str, Any]] = None, plot: bool = True) -> dict[str, Path]:
    """Write per_sample.csv, miou_curve.csv (clicks, mIoU), summary.csv, results.json and, with plot=True,
    miou_curve.png into `out_dir`. results.json also holds every sample's IoU after each click ("ious",
    aligned with sample_rows) and `meta`. Returns {name: path}.
    """
    out = Path(out_dir)
    curve_rows = [{"clicks": k + 1, "mIoU": float(v)} for k, v in enumerate(curve)]
    samples: list[dict[str, Any]] = [dict(r) for r in sample_rows]
    if per_sample_ious is not None:
        if len(per_sample_ious) != len(samples):
            raise ValueError(f"{len(per_sample_ious)} IoU lists for {len(samples)} sample rows")
        for row, ious in zip(samples, per_sample_ious):
            row["ious"] = [float(x) for x in ious]
    data: dict[str, Any] = {"summary": summary_row, "miou_curve": [float(v) for v in curve], "per_sample": samples}
    if meta is not None:
        data["meta"] = meta
    paths = {
        "per_sample": write_csv(sample_rows, out / "per_sample.csv"),
        "curve": write_csv(curve_rows, out / "miou_curve.csv"),
        "summary": write_csv([summary_row], out / "summary.csv"),
        "json": write_json(data, out / "results.json"),
    }
    if plot:
        paths["plot"] = plot_miou_curve(curve, out / "miou_curve.png")
    return paths


# ---------------------------------------------------------------------------------------------------------------
# mIoU-vs-clicks plot
# ---------------------------------------------------------------------------------------------------------------

_COLOURS_BGR = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140)]


def _nice_step(span: float, max_ticks: int) -> float:
    raw = span / max(max_ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def plot_miou_curve(curve: Union[Sequence[float], np.ndarray, Mapping[str, Sequence[float]]], path: PathLike,
                    size: tuple[int, int] = (640, 480), title: str = "mIoU vs. number of clicks") -> Path:
    """Draw mIoU@k against k = 1..K as a PNG line plot with axes, ticks, grid and labels (cv2 only).

    `curve` is one curve or {label: curve} for several (a legend is drawn then). size is (width, height).
    The y axis runs from the lowest value rounded down to a multiple of 0.1 (0.9 at most) up to 1.0.
    Returns the path written.
    """
    import cv2

    curves = dict(curve) if isinstance(curve, Mapping) else {"": curve}
    curves = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in curves.items()}
    if not curves or any(len(v) == 0 for v in curves.values()):
        raise ValueError("plot_miou_curve needs at least one non-empty curve")
    width, height = int(size[0]), int(size[1])
    if width < 200 or height < 150:
        raise ValueError(f"plot size {size} too small; use at least (200, 150)")
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (225, 225, 225)
    left, right, top, bottom = 70, 20, 40, 55
    x0, x1, y0, y1 = left, width - right, top, height - bottom  # plot area in pixels (y0 = top)

    k_max = max(len(v) for v in curves.values())
    xs_lo, xs_hi = (0.5, 1.5) if k_max == 1 else (1.0, float(k_max))
    finite = np.concatenate([v[np.isfinite(v)] for v in curves.values()])
    low = float(finite.min()) if len(finite) else 0.0
    ys_lo = max(0.0, math.floor(min(low, 1.0) * 10 - 1e-9) / 10)
    ys_lo = min(ys_lo, 0.9)
    ys_hi = 1.0

    def px(k: float) -> int:
        return round(x0 + (k - xs_lo) / (xs_hi - xs_lo) * (x1 - x0))

    def py(v: float) -> int:
        return round(y1 - (v - ys_lo) / (ys_hi - ys_lo) * (y1 - y0))

    def text(s: str, org: tuple[int, int], scale: float = 0.45, anchor: str = "left") -> None:
        (tw, _th), _ = cv2.getTextSize(s, font, scale, 1)
        x, y = org
        if anchor == "center":
            x -= tw // 2
        elif anchor == "right":
            x -= tw
        cv2.putText(img, s, (x, y), font, scale, black, 1, cv2.LINE_AA)

    # grid and ticks
    y_step = _nice_step(ys_hi - ys_lo, 10)
    n_y = round((ys_hi - ys_lo) / y_step)
    for i in range(n_y + 1):
        v = ys_lo + i * y_step
        cv2.line(img, (x0, py(v)), (x1, py(v)), grey, 1)
        cv2.line(img, (x0 - 5, py(v)), (x0, py(v)), black, 1)
        text(f"{v:.2f}", (x0 - 8, py(v) + 5), anchor="right")
    x_step = max(1, int(_nice_step(max(k_max - 1, 1), 10)))
    ticks = [1] + list(range(x_step, k_max + 1, x_step)) if x_step > 1 else list(range(1, k_max + 1))
    for k in sorted(set(ticks)):
        cv2.line(img, (px(k), y0), (px(k), y1), grey, 1)
        cv2.line(img, (px(k), y1), (px(k), y1 + 5), black, 1)
        text(str(k), (px(k), y1 + 20), anchor="center")
    cv2.rectangle(img, (x0, y0), (x1, y1), black, 1)

    # labels; cv2 cannot draw rotated text, so the y label is drawn on a strip and rotated
    text(title, (width // 2, 25), scale=0.6, anchor="center")
    text("Number of clicks", ((x0 + x1) // 2, height - 12), scale=0.5, anchor="center")
    (tw, th), base = cv2.getTextSize("mIoU", font, 0.5, 1)
    strip = np.full((th + base + 4, tw + 4, 3), 255, dtype=np.uint8)
    cv2.putText(strip, "mIoU", (2, th + 2), font, 0.5, black, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    sy = (y0 + y1) // 2 - strip.shape[0] // 2
    sx = 8
    region = img[sy:sy + strip.shape[0], sx:sx + strip.shape[1]]
    np.minimum(region, strip[:region.shape[0], :region.shape[1]], out=region)

    # curves
    for i, (label, values) in enumerate(curves.items()):
        colour = _COLOURS_BGR[i % len(_COLOURS_BGR)]
        pts = [(px(k + 1), py(float(np.clip(v, ys_lo, ys_hi)))) for k, v in enumerate(values) if np.isfinite(v)]
        if len(pts) > 1:
            cv2.polylines(img, [np.asarray(pts, dtype=np.int32)], False, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        if label:
            ly = y1 - 12 - 18 * (len(curves) - 1 - i)
            cv2.line(img, (x1 - 150, ly - 4), (x1 - 125, ly - 4), colour, 2)
            text(label[:18], (x1 - 118, ly))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise ValueError(f"cannot write the plot to {path}; use a .png path in a writable folder")
    return path
