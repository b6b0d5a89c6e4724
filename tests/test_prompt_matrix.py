"""The prompt-shape matrix and the mask-prompt rule (issue 13, items 3 and 4).

Point sets x boxes x mask prompts, each absent, for 1 object, for N objects or for M != N objects, through
`ImagePredictor.predict`, `predict_batch`, the `SAM` API and the video predictor. Every cell either works,
and then each object's result is the one it gets when predicted alone, or raises the validator's
PromptError naming the arguments, the shapes got and the shapes accepted. Rule: 1 and N -> N objects (the
single one is shared), N and N -> N, N and M -> error.

Mask prompts are read by dtype: bool / 0-1 / 0-255 integers are binary masks of the image's size, floats are
low-resolution logits. The case that used to go wrong is an image exactly the mask-input size (64x64 for the
test variant, 256x256 for the released models), where a binary mask was taken as raw logits.
"""
import itertools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import data_file, reference_file, tiny_sam2

from masklet.predictors.image import ImagePredictor
from masklet.predictors.prompts import PromptError
from masklet.predictors.video import VideoPredictor

H, W = 96, 128
N, M = 3, 2  # N objects, and a count that does not pair up with N
# one object's prompts: two clicks (positive, negative), a box, a binary mask / low-res logits
POINTS = [[[20 + 9 * k, 30 + 6 * k], [70 + 5 * k, 50 + 7 * k]] for k in range(N)]
LABELS = [[1, 0]] * N
BOXES = [[6 + 8 * k, 10 + 5 * k, 70 + 12 * k, 80 + 4 * k] for k in range(N)]
# decoding several prompts as one batch runs matrix products of another shape, which may round differently:
# a few pixels sitting on the threshold may flip (as in test_api_sam.py::test_two_objects)
MAX_FLIPPED = 8
LOGIT_ATOL = 1e-3


def _binary_masks() -> np.ndarray:
    masks = np.zeros((N, H, W), bool)
    for k in range(N):
        masks[k, 10 + 10 * k: 60 + 8 * k, 15 + 12 * k: 90 + 6 * k] = True
    return masks


def _image(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """A smooth synthetic RGB image with a few blocks, so masks have structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([np.sin(xx / 9.0 + c) * np.cos(yy / 7.0 - c) for c in range(3)], -1) * 60 + 120
    img[h // 4: h // 2, w // 5: w // 2] = rng.integers(0, 255, 3)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return tiny_sam2(seed=1)


@pytest.fixture(scope="module")
def image():
    return _image()


@pytest.fixture(scope="module")
def predictor(model, image):
    p = ImagePredictor(model)
    p.set_image(image)
    return p


@pytest.fixture(scope="module")
def logits(predictor):
    """Per-object low-res logits (N, 1, 64, 64), as fed back from an earlier prediction."""
    out = [predictor.predict(point_coords=POINTS[k][:1], point_labels=[1], multimask_output=False)[2]
           for k in range(N)]
    return np.stack(out)


# ---------------------------------------------------------------------------------------------- the matrix
COUNTS = (0, 1, N, M)
# every combination of counts; the mask prompts alternate between float low-res logits and bool image-size
# masks (both become (B, 1, h, w) logits before the objects are paired up)
CELLS = [(p, b, m, "-" if not m else ("binary" if (p + b) % 2 else "logits"))
         for p, b, m in itertools.product(COUNTS, COUNTS, COUNTS) if p or b or m]


def _cell_id(cell):
    p, b, m, kind = cell
    return f"points{p}-box{b}-mask{m}{'' if kind == '-' else '-' + kind}"


def _expected_objects(counts):
    """The number of objects a cell describes, or None when it must be an error."""
    many = {c for c in counts if c > 1}
    if len(many) > 1:
        return None
    return many.pop() if many else 1


def _official_kwargs(p, b, m, kind, flat, logits):
    """predict() keywords for the first p point sets, b boxes, m masks; a count of 1 in the flat
    (unbatched) form when `flat`, else as a batch of one."""
    kw = {}
    masks = _binary_masks() if kind == "binary" else logits  # (N, H, W) bool / (N, 1, h, w) float
    if p:
        kw["point_coords"] = np.array(POINTS[0] if p == 1 and flat else POINTS[:p], float)
        kw["point_labels"] = np.array(LABELS[0] if p == 1 and flat else LABELS[:p])
    if b:
        kw["box"] = np.array(BOXES[0] if b == 1 and flat else BOXES[:b], float)
    if m:
        kw["mask_input"] = masks[0] if m == 1 and flat else masks[:m]
    return kw


def _alone_kwargs(k, p, b, m, kind, logits):
    """Object k of a cell predicted alone, every prompt in its unbatched form."""
    masks = _binary_masks() if kind == "binary" else logits
    kw = {}
    if p:
        kw["point_coords"], kw["point_labels"] = np.array(POINTS[k if p > 1 else 0], float), LABELS[0]
    if b:
        kw["box"] = np.array(BOXES[k if b > 1 else 0], float)
    if m:
        kw["mask_input"] = masks[k if m > 1 else 0]
    return kw


def _shape_names(kw, names):
    return [f"{names[key]} shape {tuple(np.shape(kw[key]))}" for key in names if key in kw]


def _assert_same_object(got, alone, what):
    """got / alone: (masks (C, H, W) bool, iou (C,), low-res logits (C, h, w)) of one object."""
    flipped = int((got[0] != alone[0]).sum())
    assert flipped <= MAX_FLIPPED, f"{what}: {flipped} mask pixels differ from predicting the object alone"
    np.testing.assert_allclose(got[1], alone[1], atol=1e-4, err_msg=what)
    np.testing.assert_allclose(got[2], alone[2], atol=LOGIT_ATOL, err_msg=what)


_ALONE: dict = {}


def _predict_alone(predictor, logits, k, p, b, m, kind):
    """predict() of object k of a cell on its own (cached: many cells share the same single objects)."""
    key = (id(predictor), k if p > 1 else 0 if p else None, k if b > 1 else 0 if b else None,
           k if m > 1 else 0 if m else None, kind)
    if key not in _ALONE:
        _ALONE[key] = predictor.predict(**_alone_kwargs(k, p, b, m, kind, logits))
    return _ALONE[key]


@pytest.mark.parametrize("cell", CELLS, ids=_cell_id)
def test_predict_matrix(predictor, logits, cell):
    p, b, m, kind = cell
    kw = _official_kwargs(p, b, m, kind, True, logits)
    objects = _expected_objects((p, b, m))
    if objects is None:
        with pytest.raises(PromptError) as err:
            predictor.predict(**kw)
        text = str(err.value)
        names = {"point_coords": "point_coords", "box": "box", "mask_input": "mask_input"}
        for part in _shape_names(kw, names) + ["different numbers of objects", "accepted:", "(B, 4)"]:
            assert part in text, f"{part!r} missing from the error: {text}"
        return
    masks, iou, low = predictor.predict(**kw)
    if objects == 1:
        masks, iou, low = masks[None], iou[None], low[None]
    assert masks.shape == (objects, 3, H, W) and iou.shape == (objects, 3) and low.shape == (objects, 3, 64, 64)
    for k in range(objects):
        _assert_same_object((masks[k], iou[k], low[k]), _predict_alone(predictor, logits, k, p, b, m, kind),
                            f"object {k}")


@pytest.mark.parametrize("kind", ["points", "box", "logits", "binary"])
def test_predict_batch_of_one_is_the_flat_form(predictor, logits, kind):
    """(1, N, 2) / (1, N), (1, 4), (1, 1, h, w) and (1, H, W) mean one object, like (N, 2), (4,), (1, h, w), (H, W)."""
    cell = {"points": (1, 0, 0, "-"), "box": (0, 1, 0, "-"), "logits": (0, 0, 1, "logits"),
            "binary": (0, 0, 1, "binary")}[kind]
    flat = predictor.predict(**_official_kwargs(*cell, True, logits))
    batched = predictor.predict(**_official_kwargs(*cell, False, logits))
    for a, b in zip(flat, batched):
        assert np.array_equal(a, b)


def test_issue_case_box_pair_with_three_point_sets(predictor):
    """The reported case: box (2, 4) with point_coords (3, 2) / point_labels (3,) used to pass validation and
    fail inside torch; one point set is shared by both boxes now, and (2, 4) with (3, N, 2) names both."""
    boxes = np.array(BOXES[:2], float)
    pts, lbl = np.array([[20, 30], [60, 40], [90, 70]], float), np.array([1, 1, 0])
    masks, iou, low = predictor.predict(box=boxes, point_coords=pts, point_labels=lbl, multimask_output=False)
    assert masks.shape == (2, 1, H, W)
    for k in range(2):
        alone = predictor.predict(box=boxes[k], point_coords=pts, point_labels=lbl, multimask_output=False)
        _assert_same_object((masks[k], iou[k], low[k]), alone, f"box {k}")
    with pytest.raises(PromptError, match=re.escape("3 point sets and 2 boxes (point_coords shape (3, 2, 2), "
                                                    "box shape (2, 4))")):
        predictor.predict(box=boxes, point_coords=np.stack([pts[:2]] * 3), point_labels=np.ones((3, 2)))


@pytest.mark.parametrize("kw, message", [
    ({"point_coords": [[1, 2]], "point_labels": [1, 1]}, r"point_labels must have one label per point"),
    ({"point_coords": [[[1, 2]], [[3, 4]]], "point_labels": [[1]]}, r"point_labels must have one label per point"),
    ({"point_coords": [1, 2, 3]}, r"point_coords were given without point_labels"),
    ({"point_coords": [[1, 2, 3]], "point_labels": [1]}, r"point_coords must have shape \(N, 2\) or \(B, N, 2\)"),
    ({"box": [1, 2, 3]}, r"box must be 4 numbers.*got shape \(3,\)"),
    ({"box": np.zeros((2, 2, 4))}, r"got shape \(2, 2, 4\)"),
    ({"mask_input": np.zeros((2, 3, 64, 64), np.float32)}, r"a 4-D mask prompt must be \(B, 1, H, W\)"),
    ({"mask_input": np.zeros((1, 32, 32), np.float32)}, r"low-resolution logits \(1, 64, 64\)"),
])
def test_predict_shape_errors(predictor, kw, message):
    with pytest.raises(PromptError, match=message):
        predictor.predict(**kw)


def test_box_as_corners(predictor):
    """The official predictor reshapes boxes to (-1, 2, 2): corners [[x1, y1], [x2, y2]] are one box."""
    flat = predictor.predict(box=BOXES[0])
    corners = predictor.predict(box=np.array(BOXES[0]).reshape(2, 2))
    assert np.array_equal(flat[0], corners[0]) and np.array_equal(flat[2], corners[2])
    two = predictor.predict(box=np.array(BOXES[:2]).reshape(2, 2, 2))
    assert two[0].shape == (2, 3, H, W)


# ---------------------------------------------------------------------------------------------- predict_batch
def test_predict_batch_cells(model, image, logits):
    other = _image(seed=3)
    batch = ImagePredictor(model)
    batch.set_image_batch([image, other])
    single = ImagePredictor(model)
    # image 0: one box shared by N point sets; image 1: M boxes with one point set and one mask
    kws = [_official_kwargs(N, 1, 0, "-", True, logits), _official_kwargs(1, M, 1, "binary", True, logits)]
    masks, ious, lows = batch.predict_batch([kw.get("point_coords") for kw in kws],
                                            [kw.get("point_labels") for kw in kws], [kw.get("box") for kw in kws],
                                            [kw.get("mask_input") for kw in kws])
    for i, (img, kw, count) in enumerate(zip((image, other), kws, (N, M))):
        single.set_image(img)
        assert masks[i].shape == (count, 3, H, W)
        for k in range(count):
            cell = (N, 1, 0, "-") if i == 0 else (1, M, 1, "binary")
            alone = single.predict(**_alone_kwargs(k, *cell, logits))
            _assert_same_object((masks[i][k], ious[i][k], lows[i][k]), alone, f"image {i} object {k}")
    with pytest.raises(PromptError, match=re.escape("image 1 of the batch: 2 point sets and 3 boxes")):
        batch.predict_batch([POINTS[:1], POINTS[:2]], [LABELS[:1], LABELS[:2]], [BOXES[:1], BOXES[:3]])
    with pytest.raises(PromptError, match="one entry per image \\(2 images are set\\), got 1 entries"):
        batch.predict_batch([POINTS[0]], [LABELS[0]])
    with pytest.raises(PromptError, match="image 0 of the batch: no prompt given"):
        batch.predict_batch(box_batch=[None, BOXES[0]])


# ---------------------------------------------------------------------------------------------- SAM API
@pytest.fixture(scope="module")
def sam(model):
    from masklet import SAM

    return SAM(model)


def _sam_kwargs(p, b, m, kind, flat, logits):
    """Ultralytics-style keywords: p point groups (two clicks each), b bboxes, m masks."""
    kw = {}
    masks = _binary_masks() if kind == "binary" else logits  # (N, H, W) bool / (N, 1, h, w) float
    if p:
        kw["points"], kw["labels"] = POINTS[:p], (LABELS[0] if p == 1 and flat else LABELS[:p])
    if b:
        kw["bboxes"] = BOXES[0] if b == 1 and flat else BOXES[:b]
    if m:
        kw["masks"] = masks[0] if m == 1 and flat else masks[:m]
    return kw


@pytest.mark.parametrize("cell", CELLS, ids=_cell_id)
def test_sam_api_matrix(sam, image, logits, cell):
    p, b, m, kind = cell
    kw = _sam_kwargs(p, b, m, kind, True, logits)
    objects = _expected_objects((p, b, m))
    if objects is None:
        with pytest.raises(PromptError) as err:
            sam(image, verbose=False, **kw)
        text = str(err.value)
        # the first pair that does not match is named (points / bboxes are paired before masks)
        named = re.findall(r"(bboxes|points|masks) shape \(", text)
        assert len(named) >= 2 and "different numbers of objects" in text and "accepted:" in text, text
        return
    r = sam(image, verbose=False, **kw)[0]
    assert r.masks.data.shape == (objects, H, W)
    for k in range(objects):
        key = ("sam", k if p > 1 else 0 if p else None, k if b > 1 else 0 if b else None,
               k if m > 1 else 0 if m else None, kind)
        if key not in _ALONE:
            alone_kw = _sam_kwargs(*(1 if c else 0 for c in (p, b, m)), kind, True, logits)
            if p:
                alone_kw["points"] = [POINTS[k if p > 1 else 0]]
            if b:
                alone_kw["bboxes"] = BOXES[k if b > 1 else 0]
            if m:
                alone_kw["masks"] = (_binary_masks() if kind == "binary" else logits)[k if m > 1 else 0]
            _ALONE[key] = sam(image, verbose=False, **alone_kw)[0]
        alone = _ALONE[key]
        flipped = int((r.masks.data[k] != alone.masks.data[0]).sum())
        assert flipped <= MAX_FLIPPED, f"object {k}: {flipped} pixels differ from predicting it alone"
        assert abs(float(r.boxes.conf[k]) - float(alone.boxes.conf[0])) < 1e-4


def test_sam_api_checks_object_counts_at_the_call(sam, image):
    """The mismatch is reported when the call is made, before any frame is read (also with stream=True)."""
    with pytest.raises(PromptError, match=re.escape("2 bboxes and 3 masks")):
        sam("no/such/file.jpg", bboxes=BOXES[:2], masks=_binary_masks(), stream=True)


def test_sam_api_binary_mask_matches_predictor(sam, predictor, image):
    """The SAM API and the image predictor read a binary mask prompt the same way."""
    mask = _binary_masks()[1]
    r = sam(image, masks=mask, verbose=False)[0]
    masks, _iou, _ = predictor.predict(mask_input=mask, multimask_output=False)
    assert torch.equal(r.masks.data[0], torch.from_numpy(masks[0]))


# ---------------------------------------------------------------------------------------------- video
@pytest.fixture(scope="module")
def video(model):
    frames = [_image(seed=s) for s in range(2)]
    vp = VideoPredictor(model)
    return vp, vp.init_state(frames)


def _video_add(vp, state, **kw):
    vp.reset_state(state)
    return vp.add_new_points_or_box(state, 0, 1, **kw)[2]


@pytest.mark.parametrize("points, labels, box", [
    (np.array(POINTS[0]).reshape(1, 2, 2), [LABELS[0]], None),
    (None, None, np.array(BOXES[0]).reshape(1, 4)),
    (None, None, np.array(BOXES[0]).reshape(2, 2)),
    (None, None, np.array(BOXES[0]).reshape(1, 2, 2)),
    (np.array(POINTS[0]).reshape(1, 2, 2), [LABELS[0]], BOXES[0]),
    (POINTS[0], LABELS[0], [BOXES[0]]),
], ids=["points(1,N,2)", "box(1,4)", "box(2,2)", "box(1,2,2)", "points(1,N,2)+box(4,)", "points(N,2)+box(1,4)"])
def test_video_points_or_box_batch_of_one(video, points, labels, box):
    """Every form of one object's prompts gives what the plain form (N, 2) / (N,) / (4,) gives."""
    vp, state = video
    plain = {"points": POINTS[0] if points is not None else None, "labels": LABELS[0] if labels is not None
             else None, "box": BOXES[0] if box is not None else None}
    expected = _video_add(vp, state, **plain)
    got = _video_add(vp, state, points=points, labels=labels, box=box)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kw, parts", [
    ({"points": POINTS[:2], "labels": LABELS[:2]}, ["points (2, 2, 2)", "2 objects"]),
    ({"box": BOXES[:2]}, ["box (2, 4)", "2 objects"]),
    ({"points": POINTS[:2], "labels": LABELS[:2], "box": BOXES[0]}, ["points (2, 2, 2)", "box (4,)"]),
    ({"points": POINTS[:N], "labels": LABELS[:N], "box": BOXES[:M]}, ["3 point sets and 2 boxes",
                                                                      "different numbers of objects"]),
    ({"points": POINTS[0], "labels": [1, 0, 1]}, [("labels must have one label per point: shape (2,) for points "
                                                   "of shape (2, 2), got (3,)")]),
])
def test_video_points_or_box_errors(video, kw, parts):
    vp, state = video
    vp.reset_state(state)
    with pytest.raises(PromptError) as err:
        vp.add_new_points_or_box(state, 0, 1, **kw)
    text = str(err.value)
    accepted = ["accepted: points (N, 2) with labels (N,) and/or box (4,)"]
    if parts[0].startswith("labels must"):
        accepted = []
    for part in parts + accepted:
        assert part in text, f"{part!r} missing from the error: {text}"


@pytest.mark.parametrize("form", ["uint8_01", "uint8_0255", "int64", "float_01", "torch_bool", "batch_of_one"])
def test_video_mask_forms(video, form):
    vp, state = video
    mask = _binary_masks()[0]
    vp.reset_state(state)
    expected = vp.add_new_mask(state, 0, 1, mask)[2]
    value = {"uint8_01": mask.astype(np.uint8), "uint8_0255": mask.astype(np.uint8) * 255,
             "int64": mask.astype(np.int64), "float_01": mask.astype(np.float32),
             "torch_bool": torch.from_numpy(mask), "batch_of_one": mask[None]}[form]
    vp.reset_state(state)
    assert torch.equal(vp.add_new_mask(state, 0, 1, value)[2], expected)


@pytest.mark.parametrize("value, message", [
    (np.zeros((2, H, W), bool), r"shape \(2, 96, 128\) is not one binary mask .* expected \(96, 128\)"),
    (np.zeros((H + 1, W), bool), r"expected \(96, 128\)"),
    (np.arange(H * W).reshape(H, W) % 3, r"integer mask with values \[0, 1, 2\].*0/1 or 0/255"),
    (np.full((H, W), 0.3, np.float32), r"float array with values other than 0 and 1"),
    (np.array([["a"] * W] * H), r"bool, integer or float array"),
])
def test_video_mask_errors(video, value, message):
    vp, state = video
    with pytest.raises(PromptError, match=message):
        vp.add_new_mask(state, 0, 1, value)


# ---------------------------------------------------------------------------------------------- mask-prompt rule
def _official_binary_logits(mask: np.ndarray, size: int, low: int) -> torch.Tensor:
    """What the official video predictor makes of a binary mask prompt: add_new_mask resizes it to the model
    input (bilinear, antialiased) and thresholds at 0.5; _use_mask_as_output maps it to +/-10 and
    downsamples (bilinear, antialiased)."""
    x = torch.from_numpy(mask).float()[None, None]
    if x.shape[-2:] != (size, size):
        x = (F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()
    return F.interpolate(x * 20 - 10, size=(low, low), mode="bilinear", align_corners=False, antialias=True)[0]


def _video_mask_logits(model, image, mask):
    """The low-res logits masklet's video predictor (parity-tested against the official one) stores for a
    mask prompt on a frame: an independent path to the conversion."""
    vp = VideoPredictor(model, fill_hole_area=0)
    state = vp.init_state([image])
    vp.add_new_mask(state, 0, 1, mask)
    return state.objects[0].temp_cond[0].pred_masks[0].float()


def _check_mask_size_image(model, image, mask, cross_check=True):
    """On an image exactly the mask-input size: bool, 0/1 and 0/255 masks are the same binary mask, which is
    the official conversion's logits, not the raw 0/1 values. Returns pixels that the old reading flips."""
    size, (low, _) = model.input_spec.size, model.prompt_encoder_mask_input_size()
    assert image.shape[:2] == (low, low)
    expected_logits = _official_binary_logits(mask, size, low)
    if cross_check:  # one more image encoding
        assert torch.allclose(expected_logits, _video_mask_logits(model, image, mask), atol=1e-5)
    p = ImagePredictor(model)
    p.set_image(image)
    right = p.predict(mask_input=expected_logits.numpy(), multimask_output=False)
    for form in (mask, mask.astype(np.uint8), mask.astype(np.uint8) * 255, torch.from_numpy(mask)):
        got = p.predict(mask_input=form, multimask_output=False)
        np.testing.assert_allclose(got[2], right[2], atol=1e-4)
        assert (got[0] != right[0]).sum() <= MAX_FLIPPED
    # a float array of the mask-input size is logits, as the official mask_input (here: the old reading)
    raw = p.predict(mask_input=mask.astype(np.float32)[None], multimask_output=False)
    assert not np.allclose(raw[2], right[2], atol=1e-2)
    return int((raw[0] != right[0]).sum())


def test_binary_mask_on_mask_size_image_tiny(model):
    image = _image(64, 64, seed=4)
    mask = np.zeros((64, 64), bool)
    mask[8:40, 12:50] = True
    flipped = _check_mask_size_image(model, image, mask)
    assert flipped > 0


def test_binary_mask_on_256_image_reference_model():
    """The reported case on the reference model (mask input 256x256): a 256x256 image with a 0/1 mask."""
    from masklet.data.images import read_image
    from masklet.models.build import load_model

    model = load_model(reference_file("sam2.1_hiera_t_random.pt"))
    truck = read_image(data_file("images/truck.jpg"))
    image = np.ascontiguousarray(truck[300:812:2, 500:1012:2])  # 256x256
    mask = np.zeros((256, 256), bool)
    mask[60:200, 40:220] = True
    flipped = _check_mask_size_image(model, image, mask, cross_check=False)
    print(f"raw-logit reading of the 0/1 mask flips {flipped} of 65,536 full-resolution pixels")
    assert flipped > 1000, f"only {flipped} of 65,536 pixels differ between the binary and the raw-logit reading"


def test_float_image_size_mask_is_an_error(predictor, sam, image):
    """A float array of the image's size is neither logits (wrong size) nor a binary mask (wrong dtype)."""
    mask = _binary_masks()[0].astype(np.float32)
    with pytest.raises(PromptError, match=r"mask_input must be low-resolution logits \(1, 64, 64\) or "
                                          r"\(B, 1, 64, 64\) when float.*binary mask of the image's size \(96, 128\) "
                                          r"as bool / uint8.*got shape \(96, 128\) with dtype float32"):
        predictor.predict(mask_input=mask)
    with pytest.raises(PromptError, match=r"masks must be .*got shape \(96, 128\) with dtype float32"):
        sam(image, masks=mask, verbose=False)


@pytest.mark.parametrize("value, message", [
    (np.arange(H * W).reshape(H, W) % 3, r"integer mask with values \[0, 1, 2\]"),
    (np.zeros((64, 64), bool), (r"mask_input of shape \(64, 64\) is not a binary mask of the image's size: "
                               r"expected \(96, 128\), \(B, 96, 128\) or \(B, 1, 96, 128\)")),
])
def test_binary_mask_errors(predictor, value, message):
    with pytest.raises(PromptError, match=message):
        predictor.predict(mask_input=value)


def test_binary_mask_logits_follow_the_input_layout():
    """SAM 1 inputs are resized along the longest side and padded at the bottom / right: a full-image mask
    covers the top half of a 2:1 image's logits and the padding is background (-10); SAM 2 stretches it."""
    from masklet.data.preprocess import InputSpec
    from masklet.predictors.prompts import binary_mask_logits

    full = np.ones((1, 50, 100), bool)
    sam1 = binary_mask_logits(full, InputSpec(1024, "longest"), (256, 256))[0, 0]
    assert sam1.shape == (256, 256)
    assert np.allclose(sam1[:120], 10.0) and np.allclose(sam1[136:], -10.0)
    sam2 = binary_mask_logits(full, InputSpec(1024, "square"), (256, 256))[0, 0]
    assert np.allclose(sam2, 10.0)
