"""`masklet.train` end to end on a tiny synthetic dataset with the small test variant at 128 px: the run
folder and its files, checkpoints that load strictly, resume continuing exactly, the command line, and DDP
over gloo with two processes (torchrun)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_box_clips
from PIL import Image

import masklet
from masklet.cli import main
from masklet.models.build import infer_variant, load_model
from masklet.train.trainer import Trainer, TrainStep

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(model="sam2_test", imgsz=128, batch=1, lr=1e-3, corrections=1, amp=False, verbose=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """images/ + masks/ (instance-id PNGs): 4 images with a red box and a green disc."""
    root = tmp_path_factory.mktemp("shapes")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:72, :96]
    for i in range(4):
        img = (rng.random((72, 96, 3)) * 60).astype(np.uint8)
        ids = np.zeros((72, 96), np.uint8)
        y, x = rng.integers(5, 35), rng.integers(5, 45)
        img[y:y + 25, x:x + 35] = (210, 40, 40)
        ids[y:y + 25, x:x + 35] = 1
        disc = (yy - 55) ** 2 + (xx - 75) ** 2 < 12 ** 2
        img[disc] = (40, 200, 60)
        ids[disc] = 2
        Image.fromarray(img).save(root / "images" / f"{i}.jpg")
        Image.fromarray(ids).save(root / "masks" / f"{i}.png")
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_folder_checkpoints_and_metrics(dataset, tmp_path):
    result = masklet.train(data=str(dataset), epochs=2, project=str(tmp_path), val_samples=2, **FAST)
    run = tmp_path / "exp"
    assert result["save_dir"] == run and result["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    for name in ("weights/last.pt", "weights/best.pt", "metrics.csv", "results.png", "args.json"):
        assert (run / name).is_file(), name
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[-1]["step"]) == 8
    assert 0.0 <= float(rows[-1]["val/mIoU@1"]) <= 1.0
    best = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert set(best) == {"model"}
    reference = masklet.build_model("sam2_test").state_dict()
    assert set(best["model"]) == set(reference)  # the official key set: loads strictly here and in Meta's builder
    assert infer_variant(best["model"]) == "sam2_test"
    model = load_model(run / "weights" / "last.pt")
    assert not torch.equal(model.sam_mask_decoder.iou_token.weight, reference["sam_mask_decoder.iou_token.weight"])
    # a second run gets the next numbered folder
    second = masklet.train(data=str(dataset), epochs=1, project=str(tmp_path), val=False, **FAST)
    assert second["save_dir"] == tmp_path / "exp2"
    assert "val/mIoU@1" not in _rows(tmp_path / "exp2" / "metrics.csv")[0]


def test_frozen_parts_do_not_change(dataset, tmp_path):
    torch.manual_seed(0)
    net = masklet.build_model("sam2_test")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # amp=True: bfloat16 autocast where the CPU has bf16 instructions (float32 elsewhere)
    masklet.train(data=str(dataset), epochs=1, project=str(tmp_path), val=False, freeze="image_encoder",
                  **{**FAST, "model": net, "amp": True})
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.", "no_mem_embed"))
                           for k in changed)
    assert "sam_mask_decoder.conv_s0.weight" in changed  # a decoder weight, used on the frozen encoder's output


def test_random_initialisation_is_mimetic_unless_asked_and_checkpoints_are_untouched(dataset, tmp_path):
    args = dict(data=str(dataset), epochs=1, project=str(tmp_path), val=False, **FAST)
    with pytest.raises(ValueError, match="init='xavier': use one of mimetic, default"):
        masklet.train(init="xavier", **args)
    layer = "sam_mask_decoder.transformer.layers.0.cross_attn_token_to_image"
    for init, tied in (("mimetic", True), ("default", False)):
        trainer = Trainer(init=init, **args)
        trainer._setup()
        attn = trainer.net.get_submodule(layer)
        assert torch.equal(attn.k_proj.weight, attn.q_proj.weight) == tied, init
    # a checkpoint starts as it was saved
    torch.manual_seed(0)
    path = tmp_path / "start.pt"
    torch.save({"model": masklet.build_model("sam2_test").state_dict()}, path)
    trainer = Trainer(**{**args, "model": str(path)})
    trainer._setup()
    saved = torch.load(path, weights_only=True)["model"]
    assert torch.equal(trainer.net.state_dict()[f"{layer}.k_proj.weight"], saved[f"{layer}.k_proj.weight"])


def test_resume_continues_the_schedule_exactly(dataset, tmp_path, monkeypatch):
    args = dict(data=str(dataset), epochs=2, val=False, seed=3, **FAST)
    torch.manual_seed(0)
    full = masklet.train(project=str(tmp_path / "a"), **args)

    original = Trainer._save

    def save_then_stop(self, epoch, rows, fitness):
        original(self, epoch, rows, fitness)
        raise KeyboardInterrupt  # the run dies after its first epoch

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        masklet.train(project=str(tmp_path / "b"), **args)
    monkeypatch.setattr(Trainer, "_save", original)
    resumed = masklet.train(project=str(tmp_path / "b"), resume=True, verbose=False)
    assert resumed["save_dir"] == tmp_path / "b" / "exp"
    a = torch.load(full["last"], weights_only=True)
    b = torch.load(resumed["last"], weights_only=True)
    assert a["step"] == b["step"] == 8 and a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    rows_a, rows_b = _rows(tmp_path / "a" / "exp" / "metrics.csv"), _rows(tmp_path / "b" / "exp" / "metrics.csv")
    assert len(rows_b) == 2
    for ra, rb in zip(rows_a, rows_b):
        assert float(ra["lr"]) == pytest.approx(float(rb["lr"]))
        assert float(ra["train/core_loss"]) == pytest.approx(float(rb["train/core_loss"]), rel=1e-4)


def test_image_batches_mixed_into_video_training(dataset, tmp_path, monkeypatch):
    """image_data=: every video step also trains one image batch; the step's loss is the video loss plus the
    image loss (each over its own objects), and the image batches keep coming past the end of the images."""
    clips = write_box_clips(tmp_path / "clips", frames=4)
    args = dict(data=str(clips), image_data=str(dataset), image_batch=3, epochs=1, num_frames=3, max_objects=2,
                val=False, project=str(tmp_path / "runs"), **FAST)
    with pytest.raises(ValueError, match="image_data= mixes image batches into video training"):
        masklet.train(**{**args, "data": str(dataset)})
    with pytest.raises(ValueError, match="image_batch must be a positive integer"):
        masklet.train(**{**args, "image_batch": 0})
    trainer = Trainer(**args)
    trainer._setup()
    video = next(iter(trainer.loader))
    stream = trainer._image_batches(0)
    images = [next(stream) for _ in range(3)]  # 4 images, 3 per batch: the third batch is from the second pass
    assert [len(b["images"]) for b in images] == [3, 1, 3]

    def seeded() -> torch.Generator:
        torch.manual_seed(0)  # the memory attention's dropout
        return torch.Generator().manual_seed(7)

    mixed = trainer.step_module(video, seeded(), images[0])
    generator = seeded()
    alone = trainer.step_module(video, generator)
    image = trainer.step_module._image_loss(images[0], generator)  # the same generator, drawn on after the video
    assert float(image["loss_dice"].detach()) > 0
    for key, value in mixed.items():
        torch.testing.assert_close(value, alone[key] + image[key], rtol=1e-5, atol=1e-6)
    # the whole run: one image batch per video step (2 clips, batch 1); the image encoder stays frozen
    sizes: list[int] = []
    image_loss = TrainStep._image_loss

    def counted(self, batch, generator):
        sizes.append(len(batch["images"]))
        return image_loss(self, batch, generator)

    monkeypatch.setattr(TrainStep, "_image_loss", counted)
    torch.manual_seed(0)
    net = masklet.build_model("sam2_test")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = masklet.train(**{**args, "model": net, "freeze": "image_encoder"})
    assert sizes == [3, 1] and int(result["metrics"][-1]["step"]) == 2
    changed = {k for k, v in net.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.startswith("sam_mask_decoder.") for k in changed) and any(k.startswith("memory_attention.")
                                                                          for k in changed)
    assert not any(k.startswith("image_encoder.") for k in changed)
    # the decoder's high-res projections are applied to the frozen encoder's features but are decoder weights
    assert {"sam_mask_decoder.conv_s0.weight", "sam_mask_decoder.conv_s1.weight"} <= changed


def test_command_line(dataset, tmp_path, capsys):
    assert main(["train", "help"]) == 0
    out = capsys.readouterr().out
    assert "freeze=" in out and "accumulate=" in out
    assert main(["train", "model=sam2_test", f"data={tmp_path / 'missing'}"]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert main(["train", "model=sam2_test", f"data={dataset}", "freeze=imgencoder"]) == 2
    assert "matches no parameter" in capsys.readouterr().err
    assert main(["train", "model=sam2_test", f"data={dataset}", "prob_box=1.5"]) == 2
    assert "prob_box must be a probability" in capsys.readouterr().err
    assert main(["train", "model=sam2_test", f"data={dataset}", "corrections=-1"]) == 2
    assert "corrections must be an integer >= 0" in capsys.readouterr().err
    code = main(["train", "model=sam2_test", f"data={dataset}", "epochs=1", "imgsz=128", "batch=2", "accumulate=2",
                 "corrections=0", "amp=False", "val=False", "verbose=False", f"project={tmp_path}"])
    assert code == 0
    rows = _rows(tmp_path / "exp" / "metrics.csv")
    assert int(rows[0]["step"]) == 1  # 2 batches of 2, accumulated into one optimizer step


@pytest.mark.parametrize("mode", ["image", "video"])
def test_ddp_two_cpu_processes_with_gloo(dataset, tmp_path, mode):
    import socket

    with socket.socket() as sock:  # a free port: other test runs on this machine may use the default one
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASKLET_DEBUG": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m",
           "masklet.cli", "train", "model=sam2_test", "epochs=1", "imgsz=128", "batch=1", "corrections=0", "amp=False",
           "val=False", "verbose=False", "device=cpu", f"project={tmp_path / 'runs'}"]
    if mode == "image":
        cmd.append(f"data={dataset}")
    else:  # 2 clips (one per rank) with the memory modules training and an image batch mixed into each step
        clips = write_box_clips(tmp_path / "clips", frames=4)
        cmd += [f"data={clips}", "num_frames=3", "freeze=image_encoder", f"image_data={dataset}"]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # DDP's layout check compares the strides of size-1 dimensions too (1x1 and depthwise convs): no warning
    assert "Grad strides do not match" not in proc.stderr, proc.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert runs == ["exp"]  # only rank 0 writes
    rows = _rows(tmp_path / "runs" / "exp" / "metrics.csv")
    # 4 images over 2 ranks, batch 1: 2 synchronised steps; 2 clips: 1
    assert int(rows[0]["step"]) == (2 if mode == "image" else 1)
    load_model(tmp_path / "runs" / "exp" / "weights" / "last.pt")
