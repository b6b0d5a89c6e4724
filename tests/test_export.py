"""ONNX export on the small `sam2_test` variant: argument errors, the folder and metadata, every graph against
the torch model at other shapes than it was traced with, and OnnxImagePredictor against ImagePredictor."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, data_file, tiny_sam2

import masklet
from masklet.cli import main
from masklet.data.images import read_image
from masklet.models.common import ImageFeatures
from masklet.predictors.image import ImagePredictor

pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")


@pytest.mark.parametrize("kwargs, match", [
    (dict(format="tflite"), "format='tflite' is not supported"),
    (dict(opset=11), "opset=11 is too old"),
    (dict(opset="17"), "must be an integer"),
    (dict(imgsz=1000), "multiple of 64"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        masklet.export(model="sam2.1_t.pt", **kwargs)


def test_missing_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'masklet\[export\]'"):
        masklet.export(model="sam2.1_t.pt")
    assert main(["export", "model=sam2.1_t.pt"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'masklet[export]'" in err and "Traceback" not in err


def test_cli_errors(capsys):
    assert main(["export", "model=sam2.1_t.pt", "format=tflite"]) == 2
    assert "format='tflite' is not supported" in capsys.readouterr().err
    assert main(["export", "format=onnx"]) == 2
    assert "needs model=" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_sam2()
    project = tmp_path_factory.mktemp("export")
    (project / "small").mkdir()  # taken: the export must not write into it
    folder = masklet.export(model=model, imgsz=256, project=str(project), name="small", progress=False)
    return model, folder


def test_folder_and_metadata(exported):
    model, folder = exported
    assert folder.name == "small2" and not any((folder.parent / "small").iterdir())
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["image_encoder.onnx", "mask_prompt.onnx", "memory_attention.onnx", "memory_encoder.onnx",
                     "metadata.json", "prompt_decoder.onnx"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["variant"] == "sam2_test" and meta["image_size"] == 256 and meta["num_maskmem"] == 7
    assert meta["max_obj_ptrs_in_encoder"] == 16 and meta["mean"] == [0.485, 0.456, 0.406]
    assert meta["opset"] == 17 and meta["versions"]["torch"] == torch.__version__ and not meta["int8_encoder"]


def _session(folder, name):
    import onnxruntime as ort

    return ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])


def test_encoder_graph(exported):
    model, folder = exported
    x = torch.randn(1, 3, 256, 256)
    out = _session(folder, "image_encoder").run(None, {"image": x.numpy()})
    with torch.no_grad():
        f = model.encode_image(x)
        ref = [model.image_embedding(f), f.high_res[0], f.high_res[1], f.embed, f.pos]
    for got, want in zip(out, ref):
        assert got.shape == tuple(want.shape)
        assert np.abs(got - want.numpy()).max() <= 1e-4 * float(want.abs().mean()) + 1e-6


@pytest.mark.parametrize("batch, with_mask", [(1, False), (3, True)])
def test_decoder_graph(exported, batch, with_mask):
    """Other prompt counts than traced (B = 1, N = 3): B prompt sets of 5 points (box corners, click, padding)."""
    model, folder = exported
    torch.manual_seed(batch)
    embed, high = torch.randn(batch, 32, 16, 16), [torch.randn(batch, 4, 64, 64), torch.randn(batch, 8, 32, 32)]
    points = torch.rand(batch, 5, 2) * 256
    labels = torch.tensor([[2, 3, 1, 0, -1]] * batch)
    mask = torch.randn(batch, 1, 64, 64) if with_mask else None
    out = _session(folder, "prompt_decoder").run(None, {
        "image_embed": embed.numpy(), "high_res_feats_0": high[0].numpy(), "high_res_feats_1": high[1].numpy(),
        "point_coords": points.numpy(), "point_labels": labels.numpy(),
        "mask_input": (mask if with_mask else torch.zeros(batch, 1, 64, 64)).numpy(),
        "has_mask_input": np.array([float(with_mask)], np.float32)})
    with torch.no_grad():
        sparse, dense = model.sam_prompt_encoder((points, labels.int()), None, mask)
        sparse = sparse[:, :5]  # the torch encoder appends its own padding point; the graph's is in the input
        masks, iou, tokens, obj = model.sam_mask_decoder._predict(embed, model.sam_prompt_encoder.get_dense_pe(),
                                                                  sparse, dense, high)
        ptr = torch.where(obj[..., None] > 0, model.obj_ptr_proj(tokens), model.no_obj_ptr)
    for got, want in zip(out, (masks, iou, obj, ptr)):
        assert got.shape == tuple(want.shape)
        assert np.abs(got - want.numpy()).max() <= 1e-4


def test_memory_encoder_graph(exported):
    model, folder = exported
    embed, low = torch.randn(1, 32, 16, 16), torch.randn(3, 1, 64, 64) * 4
    scores = torch.tensor([[2.0], [-1.0], [0.5]])
    sess = _session(folder, "memory_encoder")
    for binarize in (True, False):
        out = sess.run(None, {"vision_features": embed.numpy(), "mask_logits": low.numpy(),
                              "object_score_logits": scores.numpy(), "binarize": np.array([float(binarize)], np.float32)})
        with torch.no_grad():
            high = torch.nn.functional.interpolate(low, size=(256, 256), mode="bilinear", align_corners=False)
            mem, pos = model.encode_memory(ImageFeatures(embed, embed, []), high, scores, binarize)
        assert np.abs(out[0] - mem.numpy()).max() <= 1e-4 and np.abs(out[1] - pos[:1].numpy()).max() <= 1e-5


@pytest.mark.parametrize("frames, ptrs", [(1, 1), (5, 7), (8, 18), (2, 0)])
def test_memory_attention_graph(exported, frames, ptrs):
    """The dynamic bank: any number of memory frames and object pointers (none too) against attend_memory."""
    model, folder = exported
    torch.manual_seed(frames)
    objects = 2
    embed, pos = torch.randn(1, 32, 16, 16), torch.randn(1, 32, 16, 16)
    tpos = torch.tensor([0, 0, 6, 5, 1, 2, 3, 4][:frames])
    memory = torch.randn(objects, frames, 16, 16, 16)
    pointers = torch.randn(ptrs, objects, 32)
    rel = [i - ptrs // 2 for i in range(ptrs)]
    with torch.no_grad():
        memory_pos = model.memory_encoder.position_encoding(memory[:, 0])
        bank = [(int(tpos[i]), memory[:, i], memory_pos) for i in range(frames)]
        tokens = model.object_pointer_tokens(rel, pointers, 16) if ptrs else None
        want = model.attend_memory(ImageFeatures(embed, pos, []), bank, tokens)
    got = _session(folder, "memory_attention").run(None, {
        "vision_features": embed.numpy(), "vision_pos_enc": pos.numpy(), "memory": memory.numpy(),
        "memory_tpos": tpos.numpy(), "obj_ptrs": pointers.transpose(0, 1).contiguous().numpy(),
        "obj_ptr_tpos": np.array(rel, np.float32) / 15})[0]
    assert got.shape == tuple(want.shape)
    assert np.abs(got - want.numpy()).max() <= 1e-4


PROMPTS = {
    "point": dict(point_coords=[[900, 400]], point_labels=[1]),
    "points_single": dict(point_coords=[[900, 400], [300, 700]], point_labels=[1, 0], multimask_output=False),
    "box": dict(box=[400, 300, 1300, 900], multimask_output=False),
    "boxes_points": dict(box=[[400, 300, 1300, 900], [100, 100, 600, 600]], point_coords=[[[900, 400]], [[300, 300]]],
                         point_labels=[[1], [1]]),
    "normalized": dict(point_coords=[[0.5, 0.4]], point_labels=[1], normalize_coords=False),
}


@pytest.fixture(scope="module")
def image_pair(exported):
    from masklet.onnx import OnnxImagePredictor

    model, folder = exported
    image = read_image(data_file("images/truck.jpg"))
    torch_pred, onnx_pred = ImagePredictor(model), OnnxImagePredictor(folder)
    torch_pred.set_image(image)
    onnx_pred.set_image(image)
    return torch_pred, onnx_pred


@pytest.mark.parametrize("name", list(PROMPTS))
def test_onnx_image_predictor(image_pair, name):
    torch_pred, onnx_pred = image_pair
    want = torch_pred.predict(**PROMPTS[name], return_logits=True)
    got = onnx_pred.predict(**PROMPTS[name], return_logits=True)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
    assert np.abs(got[1] - want[1]).max() <= 1e-4
    assert np.abs(got[2] - want[2]).max() <= 1e-3
    flipped = int(((got[0] > 0) != (want[0] > 0)).sum())
    assert flipped <= 1e-4 * got[0].size
    # follow-up with the returned low-res logits as mask_input, and the boolean output
    kwargs = {k: v for k, v in PROMPTS[name].items() if k != "multimask_output"}
    if got[2].ndim == 3:
        again = dict(kwargs, mask_input=got[2][np.argmax(got[1])][None], multimask_output=False)
        g2, w2 = onnx_pred.predict(**again), torch_pred.predict(**again)
        assert g2[0].dtype == bool and int((g2[0] != w2[0]).sum()) <= 1e-4 * g2[0].size


def test_onnx_image_predictor_errors(exported):
    from masklet.onnx import OnnxImagePredictor

    pred = OnnxImagePredictor(exported[1])
    with pytest.raises(RuntimeError, match="no image is set"):
        pred.predict(point_coords=[[1, 1]], point_labels=[1])
    pred.set_image(np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(ValueError, match="outside the image"):
        pred.predict(point_coords=[[100, 10]], point_labels=[1])
    with pytest.raises(ValueError, match="no prompt given"):
        pred.predict()
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        OnnxImagePredictor(exported[1].parent / "small")


def test_onnx_predictor_never_imports_torch(exported):
    code = (
        "import sys, numpy as np\n"
        "from masklet.onnx import OnnxImagePredictor\n"
        f"p = OnnxImagePredictor({str(exported[1])!r})\n"
        "p.set_image(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))\n"
        "m, s, low = p.predict(point_coords=[[80, 60]], point_labels=[1], box=[10, 10, 150, 110])\n"
        "assert m.shape == (3, 120, 160) and m.dtype == bool and s.shape == (3,) and low.shape == (3, 64, 64)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_cli_export_int8(tmp_path, capsys):
    """`masklet export` end to end on a sam2_test checkpoint file, with the int8 encoder."""
    model = tiny_sam2()
    ckpt = tmp_path / "small.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    assert main(["export", f"model={ckpt}", "format=onnx", "imgsz=256", "int8=True", f"project={tmp_path / 'runs'}"]) == 0
    folder = tmp_path / "runs" / "sam2_test"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["int8_encoder"] and meta["source"] == str(ckpt)
    assert (folder / "image_encoder.fp32.onnx").stat().st_size > (folder / "image_encoder.onnx").stat().st_size
    assert f"to {folder}" in capsys.readouterr().out
