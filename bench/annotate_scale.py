"""Dataset-scale annotation: items per second of `auto_annotate` in one process vs on Ray with 1 and 2 workers.

    python bench/annotate_scale.py                       # 48 images, sam2_test, Ray with 1 and 2 workers
    python bench/annotate_scale.py --images 200 --model sam2.1_hiera_t --workers 1,2,4
    python bench/annotate_scale.py --quick               # smoke test (6 images)

The inputs are copies of the shared photos (--size, default 320x213) with two boxes each from a YOLO label folder
(so the numbers are SAM's work, not a detector's). Every configuration annotates the same images into a fresh
folder with one torch thread per worker (the single process too, so the work per item is the same):

* local: `auto_annotate(engine="local")` (after an untimed warm-up call that pays the imports); startup_s is the
  wall time of a run on one image (model load, checks), items_per_s = (images - 1) / (wall_s - startup_s).
* ray_N: `auto_annotate(engine="ray", num_workers=N)` on a local Ray started once with --ray-cpus CPUs (its
  start-up is reported apart as ray_init_s). Each call starts its actors and loads the model in each, as a real
  run does. items_per_s is the steady rate from the workers' finish times in manifest.jsonl ((items - 1) / (last
  finish - first finish)); startup_s = wall_s - items / items_per_s is the fixed cost of a run (actor start-up,
  model loads, the COCO merge); item_s_mean is the mean time a worker spent inside one item.

overhead_per_item_s = 1 / items_per_s(ray_1) - 1 / items_per_s(local): what Ray adds per item with one worker
(scheduling, batching, result transfer). The throughput model: a run takes startup_s + items / (workers x
per-worker items/s), as long as each worker has a core (or a GPU) of its own.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def make_inputs(folder: Path, n: int, size: tuple[int, int]) -> tuple[Path, Path]:
    from PIL import Image

    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    photos = [Image.open(common.data_file(f"images/{p}")).convert("RGB").resize(size)
              for p in ("truck.jpg", "groceries.jpg")]
    for k in range(n):
        photos[k % 2].save(images / f"img_{k:05d}.jpg", quality=90)
        (labels / f"img_{k:05d}.txt").write_text("0 0.30 0.55 0.40 0.70\n1 0.75 0.35 0.40 0.50\n")
    return images, labels


def timed(images: Path, labels: Path, weights: str, out: Path, **kw) -> tuple[float, object]:
    from masklet import auto_annotate

    t0 = time.perf_counter()
    result = auto_annotate(images, det_model=labels, sam_model=weights, output_dir=out, verbose=False, **kw)
    return time.perf_counter() - t0, result


def run(images: Path, labels: Path, weights: str, out: Path, **kw) -> dict:
    """Wall time, steady throughput and fixed cost of one run over all images."""
    wall, result = timed(images, labels, weights, out, **kw)
    n = len(list(images.iterdir()))
    manifest = out / "manifest.jsonl"
    if not manifest.exists():  # local: fixed cost = a run on one image (after the warm-up that paid the imports)
        startup, _ = timed(images.parent / "warmup_images", labels, weights, out.with_name("local_one"))
        rate = (n - 1) / max(wall - startup, 1e-9)
        return {"wall_s": wall, "items_per_s": rate, "items_per_s_with_startup": n / wall, "startup_s": startup}
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    done = sorted(r["finished"] for r in rows)
    # the items after the first one finished, over the time they took: actor start-up and model loads aside
    rate = (len(done) - 1) / max(done[-1] - done[0], 1e-9)
    return {"wall_s": wall, "items_per_s": rate, "items_per_s_with_startup": n / wall,
            "startup_s": max(0.0, wall - n / rate), "item_s_mean": sum(r["seconds"] for r in rows) / len(rows),
            "done": result.summary["done"], "failed": result.summary["failed"]}


def _one(images: Path) -> Path:
    one = images.parent / "warmup_images"
    one.mkdir()
    first = min(images.iterdir())
    shutil.copy(first, one / first.name)
    return one


def main() -> None:
    parser = common.common_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="number of images (default 24, 6 with --quick)")
    parser.add_argument("--size", default="320x213", help="image size WxH")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to time")
    parser.add_argument("--ray-cpus", type=int, default=2, help="num_cpus of the local Ray")
    parser.add_argument("--batch-size", type=int, default=4, help="auto_annotate batch_size (items per Ray batch)")
    args = parser.parse_args()
    common.fill_defaults(args, {"model": "sam2_test", "images": 48}, {"images": 6})
    args.threads = args.threads or 1
    device = common.setup(args)
    model, info = common.load_bench_model(args.model, device, args.seed)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    result = {"benchmark": "annotate_scale", "settings": common.settings(args),
              "machine": common.machine_info(device, args.dtype), "model": info}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "weights.pt"
        torch.save({"model": model.state_dict()}, weights)  # every worker loads the checkpoint itself
        common.free_model(model)
        images, labels = make_inputs(tmp, args.images, size)
        common.log(f"[local] {args.images} images")
        timed(_one(images), labels, str(weights), tmp / "warmup")
        result["local"] = run(images, labels, str(weights), tmp / "local")

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        result["ray_init_s"] = time.perf_counter() - t0
        try:
            for n in [int(w) for w in args.workers.split(",")]:
                common.log(f"[ray] {n} worker(s)")
                result[f"ray_{n}"] = run(images, labels, str(weights), tmp / f"ray_{n}", engine="ray",
                                         num_workers=n, batch_size=args.batch_size)
                same = all((tmp / f"ray_{n}" / p.name).read_text() == p.read_text()
                           for p in (tmp / "local").iterdir())
                result[f"ray_{n}"]["identical_to_local"] = same
        finally:
            ray.shutdown()

    if "ray_1" in result:
        result["overhead_per_item_s"] = 1 / result["ray_1"]["items_per_s"] - 1 / result["local"]["items_per_s"]
    for key in [k for k in result if k.startswith("ray_") and k != "ray_init_s"]:
        result[key]["speedup_vs_local"] = result[key]["items_per_s"] / result["local"]["items_per_s"]
    common.emit(result, args.output)


if __name__ == "__main__":
    main()
