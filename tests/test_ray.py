"""auto_annotate and val on Ray (engine="ray"): outputs identical to the single-process engine, resumable runs,
bad items recorded without stopping the run. One local Ray (num_cpus=2) is shared by the whole module: starting
Ray costs seconds."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_file, tiny_sam2, write_clip
from PIL import Image

ray = pytest.importorskip("ray", reason="engine='ray' needs pip install 'masklet[ray]'")

from masklet.api.annotate import annotate_cli, auto_annotate

SMALL = (240, 160)


def detector(image):
    """Two fixed boxes per image (scaled to it), scored, classes 2 and 5."""
    h, w = image.shape[:2]
    boxes = np.array([[0.1 * w, 0.2 * h, 0.5 * w, 0.9 * h], [0.55 * w, 0.1 * h, 0.95 * w, 0.6 * h]])
    return boxes, np.array([2, 5]), np.array([0.9, 0.7])


@pytest.fixture(scope="module")
def ray_local():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray actors (1 CPU each): same kernels, same numbers
    # the workers unpickle `detector` by module name: they need this folder on their path (started with this env)
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), old_path) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if old_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old_path
    yield ray
    ray.shutdown()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint file (official format) of the tiny test variant: every actor loads it once."""
    path = tmp_path_factory.mktemp("ray_weights") / "tiny.pt"
    torch.save({"model": tiny_sam2(seed=3).state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two downscaled photos and a 3-frame video in one folder."""
    folder = tmp_path_factory.mktemp("ray_inputs") / "data"
    folder.mkdir()
    for name in ("truck.jpg", "groceries.jpg"):
        Image.open(data_file(f"images/{name}")).convert("RGB").resize(SMALL).save(folder / name)
    write_clip(data_file("videos/bedroom.mp4"), folder / "clip.mp4", 3, size=(320, 180))
    return folder


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in ("manifest.jsonl", "errors.jsonl")}


def test_yolo_images_and_video_identical_to_local(ray_local, weights, inputs, tmp_path):
    local = auto_annotate(inputs, det_model=detector, sam_model=weights, output_dir=tmp_path / "local",
                          verbose=False)
    out = auto_annotate(inputs, det_model=detector, sam_model=weights, output_dir=tmp_path / "ray", engine="ray",
                        num_workers=2, batch_size=1, verbose=False)
    assert out == tmp_path / "ray"
    assert out.summary["done"] == 3 and out.summary["skipped"] == 0 and out.summary["failed"] == 0
    assert out.summary["images"] == 2 and out.summary["videos"] == 1 and out.summary["frames"] == 3
    expected = _files(local)
    assert sorted(expected) == ["clip_000000.txt", "clip_000001.txt", "clip_000002.txt", "groceries.txt",
                                "truck.txt"]
    assert sum(len(t.splitlines()) for t in expected.values()) == out.summary["annotations"] > 0
    assert _files(out) == expected
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in manifest) == ["clip.mp4", "groceries.jpg", "truck.jpg"]
    assert (out / "errors.jsonl").read_text() == ""

    # resumed: nothing is redone, nothing rewritten
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = auto_annotate(inputs, det_model=detector, sam_model=weights, output_dir=out, exist_ok=True,
                          engine="ray", num_workers=2, verbose=False)
    assert (again.summary["done"], again.summary["skipped"], again.summary["failed"]) == (0, 3, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".txt"} == {
        k: v for k, v in stamps.items() if k.endswith(".txt")}
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3


def test_coco_identical_to_local(ray_local, weights, inputs, tmp_path):
    local = auto_annotate(inputs, det_model=detector, sam_model=weights, output_dir=tmp_path / "local",
                          format="coco", verbose=False)
    out = annotate_cli({"data": str(inputs), "det_model": detector, "sam_model": weights, "format": "coco",
                        "output_dir": str(tmp_path / "ray"), "engine": "ray", "num_workers": 2, "batch_size": 2,
                        "verbose": False})
    expected = json.loads((local / "annotations.json").read_text())
    assert len(expected["images"]) == 5 and len(expected["annotations"]) > 0
    assert json.loads((out / "annotations.json").read_text()) == expected


def test_bad_item_is_recorded_and_retried(ray_local, weights, inputs, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(inputs, data)
    (data / "broken.jpg").write_bytes(b"not a jpeg at all")
    (data / "broken_video.mp4").write_bytes(b"\x00" * 64)
    with pytest.warns(UserWarning, match="2 input\\(s\\) failed"):
        out = auto_annotate(data, det_model=detector, sam_model=weights, output_dir=tmp_path / "out",
                            engine="ray", num_workers=2, verbose=True)
    assert (out.summary["done"], out.summary["skipped"], out.summary["failed"]) == (3, 0, 2)
    assert "3 done, 0 skipped" in capsys.readouterr().out
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e["path"]).name for e in errors) == ["broken.jpg", "broken_video.mp4"]
    assert all(e["error"] for e in errors)
    assert not (out / "broken.txt").exists() and (out / "truck.txt").exists()

    # the image is fixed: the rerun does only that one
    shutil.copy(data / "truck.jpg", data / "broken.jpg")
    (data / "broken_video.mp4").unlink()
    again = auto_annotate(data, det_model=detector, sam_model=weights, output_dir=out, exist_ok=True,
                          engine="ray", num_workers=2, verbose=False)
    assert (again.summary["done"], again.summary["skipped"], again.summary["failed"]) == (1, 3, 0)
    assert (out / "broken.txt").read_text() == (out / "truck.txt").read_text()
    assert (out / "errors.jsonl").read_text() == ""


def test_bad_engine_arguments(ray_local, weights, inputs, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="engine must be"):
        auto_annotate(inputs, det_model=detector, sam_model=weights, engine="spark", verbose=False)
    with pytest.raises(ValueError, match="num_workers"):
        auto_annotate(inputs, det_model=detector, sam_model=weights, output_dir=tmp_path / "o", engine="ray",
                      num_workers=0, verbose=False)
    with monkeypatch.context() as m:  # Ray not installed
        m.setitem(sys.modules, "ray", None)
        with pytest.raises(ImportError, match=r"pip install 'masklet\[ray\]'"):
            auto_annotate(inputs, det_model=detector, sam_model=weights, output_dir=tmp_path / "o", engine="ray",
                          verbose=False)


def test_val_engine_ray_gives_the_same_report(ray_local, weights, tmp_path):
    from test_val_run import make_vos

    from masklet.val import run, val_cli

    root = make_vos(tmp_path / "vos")
    local = run(weights, root, save_dir=tmp_path / "local", verbose=False)
    spread = val_cli({"model": weights, "data": str(root), "save_dir": str(tmp_path / "ray"), "engine": "ray",
                      "num_workers": "2", "verbose": "False"})
    assert spread["meta"]["engine"] == "ray"
    assert spread["summary"] == local["summary"]
    assert spread["per_object"] == local["per_object"]
    drop_fps = [{k: v for k, v in row.items() if k != "fps"} for row in local["per_video"]]
    assert [{k: v for k, v in row.items() if k != "fps"} for row in spread["per_video"]] == drop_fps
    masks = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local" / "masks").rglob("*.png"))
    assert len(masks) == 8
    for rel in masks:
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()
    with pytest.raises(ValueError, match="engine='ray' spreads videos"):
        run(weights, root, task="interactive", engine="ray", verbose=False)
