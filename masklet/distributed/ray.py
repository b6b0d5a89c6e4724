"""`auto_annotate` and `masklet val` on Ray: the inputs become a Ray Dataset, and a pool of actors (the model loaded
once per actor, one GPU each where asked) annotates or tracks them, one image or one whole video per unit of work.

The work itself is the single-process code (`masklet.api.annotate._Annotator`, `masklet.val.runner._track_video`);
this module only spreads it, records progress and merges what the workers wrote:

* YOLO: workers write the label files directly into the output folder.
* COCO: each item's images and annotations go to `.shards/<stem>.json`; at the end the driver merges the shards
  in input order, renumbering image and annotation ids exactly as one process would, into `annotations.json`.
* `manifest.jsonl` (one line per finished item) makes runs resumable: a rerun into the same folder
  (`exist_ok=True`) skips what it lists. A failing item (corrupt image, unreadable video) is written to
  `errors.jsonl` with its error and never stops the run; it is tried again by the next run.

Throughput model: items/s = workers x (1 / seconds per item on one worker); Ray adds a roughly constant cost per
batch (scheduling, serialising the results) that `bench/annotate_scale.py` measures.
"""
from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
SHARDS = ".shards"
RAY_HINT = "pip install 'masklet[ray]'"


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # the [data] extra
    except ImportError as exc:
        raise ImportError(f"engine='ray' needs Ray Data ({exc}); install it with {RAY_HINT}") from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False) -> Any:
    """Connect to Ray: an existing cluster when `address` is given ("auto", "ray://host:port", "host:port"),
    otherwise the running local instance, otherwise a new local one with `num_cpus` CPUs (no dashboard, quiet
    logs). Returns the `ray` module. Raises ImportError naming the pip command when Ray is missing and
    ConnectionError when the cluster cannot be reached."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    quiet = {"logging_level": logging.INFO if verbose else logging.WARNING, "log_to_driver": verbose}
    if address:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise ConnectionError(f"cannot reach the Ray cluster at address={address!r} ({exc}); start it with "
                                  "`ray start --head` (or the cluster launcher / KubeRay), or leave address unset "
                                  "to run a local Ray on this machine") from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return ray


def _workers(ray: Any, num_workers: int | None, gpus_per_worker: float) -> int:
    if num_workers is not None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}")
        return num_workers
    res = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(res.get("GPU", 0) // gpus_per_worker))
    return max(1, int(res.get("CPU", 1)))


def _check_gpus(gpus_per_worker: Any) -> float:
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) or gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be a number >= 0 (0: CPU workers, 1: one GPU each), got "
                         f"{gpus_per_worker!r}")
    return float(gpus_per_worker)


def _pool(ray: Any, items: list[dict], worker_cls: type, config: dict, num_workers: int, gpus_per_worker: float,
          batch_size: int, verbose: bool) -> Any:
    """Rows of `items` -> rows the actors return (in completion order)."""
    if not verbose:  # Ray Data logs every execution plan at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.verbose_progress = False
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * num_workers)))
    ds = ds.map_batches(worker_cls, fn_constructor_kwargs={"config": config}, batch_size=batch_size,
                        batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=1 if not gpus_per_worker else 0.5,
                        num_gpus=gpus_per_worker or None)
    return ds.iter_rows()


# ---------------------------------------------------------------------------------------------- auto_annotate
class _AnnotateWorker:
    """A Ray actor: the box source and SAM model loaded once, then items annotated one by one."""

    def __init__(self, config: dict) -> None:
        from ..api.annotate import _Annotator, _load_sam
        from ..api.annotate_sources import _box_source

        c = self.config = config
        classes = c["classes"]
        source = _box_source(c["det_model"], c["conf"], c["iou"], c["imgsz"], c["max_det"], classes, c["device"])
        model = _load_sam(c["sam_model"], c["device"])
        self.annotator = _Annotator(model, source, None, c["conf"], c["iou"], c["max_det"],
                                    None if classes is None else set(classes), c["amg_args"], False)
        self.out = Path(c["output_dir"])

    def _one(self, kind: str, path: Path) -> dict:
        from dataclasses import asdict

        from ..api.annotate_sources import _Stats
        from ..api.annotate_writers import _CocoWriter, _YoloWriter

        ann = self.annotator
        coco = self.config["format"] == "coco"
        ann.writer = (_CocoWriter if coco else _YoloWriter)(self.out, ann.source)
        ann.stats = _Stats()
        (ann.video if kind == "video" else ann.image)(path)
        if coco:
            shard = self.out / SHARDS / f"{path.stem}.json"
            tmp = shard.with_suffix(".tmp")
            tmp.write_text(json.dumps({"images": ann.writer.images, "annotations": ann.writer.annotations,
                                       "used_classes": sorted(ann.writer.used_classes)}))
            os.replace(tmp, shard)  # a shard is whole or absent
        stats = asdict(ann.stats)
        # keys may be tuples: kept as JSON lists, turned back into tuples by the driver
        stats["classes_seen"] = [[k, v] for k, v in stats["classes_seen"].items()]
        return stats

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        rows = []
        for index, kind, path in zip(batch["index"], batch["kind"], batch["path"]):
            t0 = time.perf_counter()
            try:
                stats, error = self._one(kind, Path(path)), ""
            except Exception as exc:  # noqa: BLE001  (one bad item never stops the run: see errors.jsonl)
                stats = {}
                error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, (OSError, ValueError, RuntimeError)):
                    error += "\n" + traceback.format_exc(limit=3)
            rows.append({"index": int(index), "kind": kind, "path": path, "error": error,
                         "stats": json.dumps(stats), "seconds": time.perf_counter() - t0, "finished": time.time()})
        return pd.DataFrame(rows)


def _read_manifest(folder: Path) -> dict[str, dict]:
    path = folder / MANIFEST
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                done[row["path"]] = row
            except (ValueError, KeyError):
                continue  # a line cut by a crash: that item is simply redone
    return done


def annotate_ray(items: list, run_dir: Any, source: Any, config: dict, *, address: str | None,
                 num_workers: int | None, gpus_per_worker: float, batch_size: int, verbose: bool) -> dict[str, Any]:
    """Annotate `items` (`masklet.api.annotate_inputs._Item`) on Ray into `run_dir`; called by
    `auto_annotate(engine="ray")` after its checks. Returns {"output_dir", "done", "skipped", "failed",
    "errors" (list of {"path", "error"}), "stats" (summed `_Stats` fields), "seconds"}."""
    from collections import Counter

    from ..api.annotate_sources import _Stats
    from ..api.annotate_writers import _CocoWriter

    gpus = _check_gpus(gpus_per_worker)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (items per Ray batch), got {batch_size!r}")
    ray = init_ray(address, num_cpus=None, verbose=False)
    workers = _workers(ray, num_workers, gpus)
    out = run_dir.ensure()
    fmt = config["format"]
    if fmt == "coco":
        (out / SHARDS).mkdir(exist_ok=True)
    finished = _read_manifest(out)
    finished = {p: r for p, r in finished.items() if r.get("format") == fmt}
    todo = [{"index": i, "kind": it.kind, "path": str(it.path.resolve())} for i, it in enumerate(items)
            if str(it.path.resolve()) not in finished]
    skipped = len(items) - len(todo)
    config = {**config, "output_dir": str(out)}
    errors: list[dict] = []
    totals: Counter = Counter()
    classes_seen: Counter = Counter()
    no_entry: list[str] = []
    t0 = time.perf_counter()
    if todo:
        with open(out / MANIFEST, "a") as manifest:
            pool = _pool(ray, todo, _AnnotateWorker, config, min(workers, len(todo)), gpus, batch_size, verbose)
            for row in pool:
                if row["error"]:
                    errors.append({"path": row["path"], "kind": row["kind"], "error": row["error"]})
                    if verbose:
                        print(f"auto_annotate: failed {row['path']}: {row['error'].splitlines()[0]}")
                    continue
                stats = json.loads(row["stats"])
                classes_seen.update({tuple(k) if isinstance(k, list) else k: v for k, v in stats.pop("classes_seen")})
                no_entry += stats.pop("no_entry")
                totals.update(stats)
                manifest.write(json.dumps({"path": row["path"], "kind": row["kind"], "format": fmt,
                                           "seconds": round(row["seconds"], 4),
                                           "finished": round(row["finished"], 3), "stats": stats}) + "\n")
                manifest.flush()  # recorded as soon as it is done: a crash loses at most the items in flight
    seconds = time.perf_counter() - t0
    (out / ERRORS).write_text("".join(json.dumps(e) + "\n" for e in errors))
    failed = {e["path"] for e in errors}
    if fmt == "coco":
        writer = _CocoWriter(out, source)
        for it in items:
            key = str(it.path.resolve())
            shard = out / SHARDS / f"{it.path.stem}.json"
            if key in failed or not shard.is_file():
                continue
            doc = json.loads(shard.read_text())
            offset, ann_offset = len(writer.images), len(writer.annotations)
            for image in doc["images"]:
                writer.images.append({**image, "id": image["id"] + offset})
            for a in doc["annotations"]:
                writer.annotations.append({**a, "id": a["id"] + ann_offset, "image_id": a["image_id"] + offset})
            writer.used_classes.update(doc["used_classes"])
        writer.close(_Stats())
    stats = _Stats(**{k: int(v) for k, v in totals.items() if k in _Stats.__dataclass_fields__})
    stats.classes_seen, stats.no_entry = classes_seen, no_entry
    return {"output_dir": out, "done": len(todo) - len(errors), "skipped": skipped, "failed": len(errors),
            "errors": errors, "stats": stats, "seconds": seconds, "workers": workers}


class AnnotateOutput(type(Path())):  # type: ignore[misc]
    """The output folder (a Path) of `auto_annotate(engine="ray")`, with the run's `summary` dict."""

    summary: dict[str, Any]


def annotate_with_ray(items: list, run_dir: Any, source: Any, config: dict, **kwargs: Any) -> AnnotateOutput:
    """`annotate_ray`, then `auto_annotate`'s warnings and summary line; returns the folder with `.summary`."""
    import warnings
    from types import SimpleNamespace

    from ..api.annotate import _Annotator
    from ..api.annotate_sources import AnnotateWarning, _EverythingSource

    verbose = kwargs["verbose"]
    result = annotate_ray(items, run_dir, source, config, **kwargs)
    stats, out = result.pop("stats"), result["output_dir"]
    # the local engine's explanation of an empty result, on the summed counts of all workers
    view = SimpleNamespace(stats=stats, source=source, conf=config["conf"], iou=config["iou"],
                           max_det=config["max_det"],
                           generator=True if isinstance(source, _EverythingSource) else None)
    reason = _Annotator.explain_empty(view, config["classes"]) if result["done"] and not result["skipped"] else None
    if reason:
        warnings.warn(f"auto_annotate wrote no annotations: {reason}. The (empty) labels are in {out}",
                      AnnotateWarning, stacklevel=3)
    if result["failed"]:
        warnings.warn(f"{result['failed']} input(s) failed and were skipped (e.g. {result['errors'][0]['path']}: "
                      f"{result['errors'][0]['error'].splitlines()[0]}); see {out / ERRORS}. Rerun with "
                      "exist_ok=True into the same folder to retry only those", AnnotateWarning, stacklevel=3)
    summary = {**result, "images": stats.images, "videos": stats.videos, "frames": stats.frames,
               "annotations": stats.written}
    if verbose:
        print(f"auto_annotate (ray, {result['workers']} worker(s)): {result['done']} done, {result['skipped']} "
              f"skipped (already in {MANIFEST}), {result['failed']} failed; {stats.written} annotation(s) -> {out}")
    path = AnnotateOutput(out)
    path.summary = summary
    return path


# ---------------------------------------------------------------------------------------------- val
class _VOSWorker:
    """A Ray actor: the model and video predictor of `masklet.val.runner` built once, then videos tracked and
    scored one by one (writing their masks, when asked, into the shared output folder)."""

    def __init__(self, config: dict) -> None:
        from ..val.runner import _prepare_model, _resolve_dtype, _vos_predictor

        net, _ = _prepare_model(config["model"], config["device"])
        if config["imgsz"] is not None and hasattr(net, "set_image_size"):
            net.set_image_size(config["imgsz"])
        self.predictor = _vos_predictor(net, _resolve_dtype(config["dtype"], net.device))
        self.dataset, self.protocol = config["dataset"], config["protocol"]
        self.masks_dir = None if config["masks_dir"] is None else Path(config["masks_dir"])

    def __call__(self, batch: Any) -> Any:
        import pickle

        import pandas as pd

        from ..val.runner import _track_video

        rows = []
        for name in batch["video"]:
            t0 = time.perf_counter()
            scores, tracked = _track_video(self.predictor, self.dataset[name], self.masks_dir, False, self.protocol)
            rows.append({"video": name, "scores": pickle.dumps(scores), "tracked": tracked,
                         "seconds": time.perf_counter() - t0})
        return pd.DataFrame(rows)


def vos_tracker(model: Any, device: Any, imgsz: int | None, dtype: Any, protocol: str, *, address: str | None,
                num_workers: int | None, gpus_per_worker: float, verbose: bool) -> Any:
    """The `engine` of `masklet.val.runner._run_vos` on Ray: (dataset, masks_dir) -> {video: (scores, frames
    tracked, seconds)}, one video per unit of work. A video that fails stops the run (a report must be whole)."""
    gpus = _check_gpus(gpus_per_worker)
    ray = init_ray(address, verbose=False)
    workers = _workers(ray, num_workers, gpus)

    def track(dataset: Any, masks_dir: Path | None) -> dict[str, tuple]:
        import pickle

        config = {"model": model, "device": device, "imgsz": imgsz, "dtype": dtype, "dataset": dataset,
                  "protocol": protocol, "masks_dir": None if masks_dir is None else str(masks_dir)}
        items = [{"video": v} for v in dataset.names]
        results = {}
        for row in _pool(ray, items, _VOSWorker, config, min(workers, len(items)), gpus, 1, verbose):
            results[row["video"]] = (pickle.loads(row["scores"]), int(row["tracked"]), float(row["seconds"]))
        return results

    return track
