"""Shared fixtures: where the reference fixtures and test data live, and the reference tiny model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("MASKLET_REFERENCE", ROOT.parent / "shared" / "reference"))
DATA_DIR = Path(os.environ.get("MASKLET_DATA", ROOT.parent / "shared" / "data"))
# MASKLET_SLOW_TESTS=1 adds the checks that take minutes on 2 CPU cores (unset, empty or 0: the default run)
SLOW_TESTS = os.environ.get("MASKLET_SLOW_TESTS", "") not in ("", "0")


def reference_file(name: str) -> Path:
    """Path of a reference fixture; skips the test with the reason when it is not there."""
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference fixture {path} not found (set MASKLET_REFERENCE to the shared/reference folder)")
    return path


def data_file(name: str) -> Path:
    """Path of a shared test-data file; skips the test with the reason when it is not there."""
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"test data {path} not found (set MASKLET_DATA to the shared/data folder)")
    return path


def run_bench_script(script: str, *args: str, timeout: int = 600) -> dict:
    """Run bench/<script> with `args` in a fresh process from the repository root; it must exit 0 and print
    exactly one JSON object on stdout, which is returned."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


_CACHE: dict = {}


def load_fixture(name: str):
    """torch.load a reference fixture once per test session."""
    if name not in _CACHE:
        _CACHE[name] = torch.load(reference_file(name), weights_only=False, map_location="cpu")
    return _CACHE[name]


def reference_state_dict(sam2_0: bool = False) -> dict:
    """The random tiny weights of the fixtures in float32 (SAM 2.0 drops the three 2.1-only keys)."""
    sd = {k: v.float() for k, v in load_fixture("sam2.1_hiera_t_random.pt")["model"].items()}
    if sam2_0:
        for key in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"):
            sd.pop(key)
    return sd


_FRAME_FEATURES: dict = {}


def share_frame_features(predictor, video: str) -> None:
    """Make a `VideoPredictor` reuse, across tests, the image features it computes for the frames of
    `video` (a name for the frame list it will be given). The video parity and switch fixtures all run the
    same random image encoder on the same bedroom frames, and each 1024 px encode costs seconds (7.7 s on a
    2-core AVX2 CPU): sharing saved 2.5 minutes of the default run there. The cache is keyed by a fingerprint of
    every weight the features depend on (image encoder, conv_s0 / conv_s1), so a model with other encoder
    weights never reads another's features."""
    model = predictor.model
    weights = [p for name, p in model.named_parameters()
               if name.startswith(("image_encoder.", "sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1."))]
    fingerprint = tuple(float(p.double().sum()) for p in weights)
    key = (video, predictor.image_size, model.dtype, getattr(predictor, "dtype", None), fingerprint)
    store = _FRAME_FEATURES.setdefault(key, {})
    encode = predictor._encode_frame

    def encode_once(state, frame_idx):
        if frame_idx not in store:
            store[frame_idx] = encode(state, frame_idx)
        return store[frame_idx]

    predictor._encode_frame = encode_once


def compare_probe(tensor: torch.Tensor, probe: dict, rel: float = 1e-4) -> float:
    """Compare `tensor` with a stored probe; returns the max abs difference relative to the mean |value|."""
    assert list(tensor.shape) == list(probe["shape"]), (tuple(tensor.shape), probe["shape"])
    flat = tensor.detach().float().reshape(-1)
    got = flat[probe["sample_index"]]
    scale = max(float(probe["abs_mean"]), 1e-6)
    err = float((got - probe["sample"]).abs().max()) / scale
    assert err <= rel, f"sampled values differ by {err:.3g} x mean|value| (tolerance {rel})"
    assert abs(float(flat.abs().mean()) - probe["abs_mean"]) / scale <= rel * 10
    return err


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (use with `pytestmark = pytest.mark.usefixtures("one_thread")`): the tiny
    test variant's ops are too small to share, and on a busy 2-core machine two OpenMP threads waiting on each
    other make it 5-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def torch_threads():
    torch.set_num_threads(max(1, os.cpu_count() or 1))


def random_weights_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("random_weights", reference_file("random_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_sam2(seed: int = 0, obj_bias: float = 3.0):
    """The registered test variant (256 px, small widths) with weights drawn like the reference fixtures'
    (fan-in scaled normals), objects kept present by the object-score bias."""
    from masklet.models.build import build_model

    module = random_weights_module()
    model = build_model("sam2_test")
    entries = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    state = {k: v.float() if v.is_floating_point() else v for k, v in module.build(entries, seed, obj_bias).items()}
    model.load_state_dict(state)
    return model


def small_checkpoint_home(home, name: str = "sam2.1_b.pt"):
    """A MASKLET_HOME folder whose `name` holds random weights of the small `sam2_test` variant (256 px input):
    segment everything decodes a 32x32 point grid, which this keeps cheap on a CPU."""
    from masklet.models.build import build_model

    torch.manual_seed(0)
    torch.save({"model": build_model("sam2_test").state_dict()}, home / name)
    return home


def write_clip(src, dst, frames: int, size=None) -> str:
    """The first `frames` frames of a video as an mp4v file (optionally resized to size=(w, h))."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    writer = None
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok
        if size is not None:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    cap.release()
    return str(dst)


def write_box_clips(root: Path, frames: int = 6, seed: int = 2) -> Path:
    """A DAVIS-layout dataset (JPEGImages/ + Annotations/ palette PNGs) of 2 clips at 48x64 over noise: object
    1 a red box moving right, object 2 a box that vanishes after frame 3."""
    import numpy as np
    from PIL import Image

    from masklet.val.datasets import write_palette_png

    rng = np.random.default_rng(seed)
    for name in ("v1", "v2"):
        (root / "JPEGImages" / name).mkdir(parents=True)
        for t in range(frames):
            img = (rng.random((48, 64, 3)) * 40).astype(np.uint8)
            lab = np.zeros((48, 64), np.uint8)
            lab[10:20, 5 + 3 * t:20 + 3 * t] = 1
            lab[30:40, 40:55] = 2 if t < 4 else 0
            img[lab == 1] = (200, 30, 30)
            Image.fromarray(img).save(root / "JPEGImages" / name / f"{t:05d}.jpg")
            write_palette_png(root / "Annotations" / name / f"{t:05d}.png", lab)
    return root


def pytest_configure(config):
    # The fixtures put small random weights under larger models' names on purpose (README examples run offline
    # that way); the VariantNameWarning this gives is asserted in test_first_hour.py, not repeated in every summary.
    config.addinivalue_line("filterwarnings", "ignore:.* is the file name of .* weights; loading it as")


def _skip_group(reason: str) -> str:
    """A skip reason with the paths and names that differ from test to test taken out, so that one cause is
    counted once (e.g. every missing reference fixture)."""
    import re

    reason = reason.removeprefix("Skipped: ").strip()
    reason = re.sub(r"(?:(?<=[\s(])|^)(?:~|\.{1,2})?/[^\s,;)]+", "<path>", reason)  # absolute file paths
    return re.sub(r"\s+", " ", reason)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Skips as a grouped count of reasons (instead of -ra's line per test, which buried the result); failures
    and errors are still listed one by one by pytest's default summary."""
    from collections import Counter

    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    counts: Counter = Counter()
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        counts[_skip_group(reason)] += 1
    terminalreporter.section(f"{len(skipped)} skipped, by reason", sep="-")
    for reason, n in counts.most_common():
        terminalreporter.write_line(f"{n:5d}  {reason}")


def recording_retain(monkeypatch, module):
    """Replaces `module.retain_freed_memory` with a context manager that logs its use: [enabled, ..., "end"]."""
    import contextlib

    log: list = []

    @contextlib.contextmanager
    def recording(enabled=True):
        log.append(enabled)
        try:
            yield enabled
        finally:
            log.append("end")

    monkeypatch.setattr(module, "retain_freed_memory", recording)
    return log

