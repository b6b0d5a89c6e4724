"""The official video predictor's switches: parity with the reference on `sam2.1_hiera_t_video_switches_case.pt`
(add_all_frames_to_correct_as_cond, default flags on the same script, non_overlap_masks), and the legacy
semantics of clear_non_cond_mem_around_input / clear_non_cond_mem_for_multi_obj checked by behaviour."""
import copy

import numpy as np
import pytest
import torch
from conftest import data_file, load_fixture, reference_state_dict, share_frame_features, tiny_sam2
from video_replay import check_masks, replay_steps

import masklet.predictors.video as video_module
from masklet.data.images import read_image
from masklet.models.build import load_model
from masklet.predictors.video import VideoPredictor, non_overlapping

FIXTURE = "sam2.1_hiera_t_video_switches_case.pt"
_RUNS: dict = {}
_SHARED: dict = {}


def _reference_model_and_frames():
    if not _SHARED:
        ref = load_fixture(FIXTURE)
        _SHARED["model"] = load_model(reference_state_dict())
        _SHARED["frames"] = [read_image(data_file(f"videos/bedroom_frames/{i:05d}.jpg")) for i in range(6)]
        _SHARED["ref"] = ref
    return _SHARED


# correct_as_cond and default_flags run the same script, and the switch acts only from the correction (step 2)
# on: default_flags starts from a copy of correct_as_cond's state after step 1 (and takes its outputs of steps
# 0-1), which saves a 1024 px propagation.
SHARED_PREFIX = {"default_flags": ("correct_as_cond", 2)}


def replayed(case: str) -> tuple[list, list]:
    """(reference steps, our outputs) of one case: each output is {None: (ids, masks)} for a prompt step or
    {frame: (ids, masks)} for a propagation."""
    if case not in _RUNS:
        shared = _reference_model_and_frames()
        ref = shared["ref"]["cases"][case]
        predictor = VideoPredictor(shared["model"], fill_hole_area=0, feature_cache=8, **ref["predictor_kwargs"])
        raw = []  # the logits the non-overlap constraint received, one entry per returned mask set

        def recording(logits):
            raw.append(logits.clone())
            return non_overlapping(logits)

        share_frame_features(predictor, "bedroom_frames")  # the image encoder's output does not depend on the switches
        state = predictor.init_state(shared["frames"])
        outputs, first = [], 0
        if case in SHARED_PREFIX:
            source, first = SHARED_PREFIX[case]
            replayed(source)
            script = [[{k: v for k, v in step.items() if k != "masks"} for step in c["steps"][:first]]
                      for c in (shared["ref"]["cases"][source], ref)]
            assert script[0] == script[1]  # the same prompts and propagations up to the correction
            objects, memory_pos, outputs = shared["prefix"][source]
            state.objects, state.memory_pos, outputs = copy.deepcopy(objects), memory_pos, list(outputs)

        def record(i, step, output):
            outputs.append(output)
            if any(source == case and first_own == i + 1 for source, first_own in SHARED_PREFIX.values()):
                # the state before the step another case starts from
                shared.setdefault("prefix", {})[case] = (copy.deepcopy(state.objects), state.memory_pos,
                                                         list(outputs))

        video_module.non_overlapping = recording
        try:
            replay_steps(predictor, state, ref["steps"], record, first)
        finally:
            video_module.non_overlapping = non_overlapping
        if predictor.non_overlap_masks:  # attach the unconstrained logits to each output
            raws = iter(raw)
            for out in outputs:
                for key, (ids, masks) in out.items():
                    out[key] = (ids, masks, next(raws))
            assert next(raws, None) is None
        _RUNS[case] = (ref["steps"], outputs)
    return _RUNS[case]


CASE_STEPS = [("correct_as_cond", i) for i in range(5)] + [("default_flags", i) for i in range(5)] + \
    [("non_overlap_masks", i) for i in range(3)]


def check_constrained(masks: torch.Tensor, raw: torch.Tensor, record: dict) -> None:
    """check_masks for masks under the non-overlap constraint. Where two objects' logits are equal within the
    tolerance (a tie), float noise of 1e-5 decides which object keeps the pixel and the other one's logit becomes
    -10: a jump of about 10, and a flipped pixel in both masks. On this fixture (random weights, two overlapping
    boxes) the two objects' logits agree within 2e-3 on 0.1% of the pixels on frame 0 and on up to two thirds by
    frame 5, where noise flips ~0.03% of the mask pixels (measured: 0-305 at ties, 0-2 elsewhere). So: sampled logits off by more than 1e-3 must lie at a tie of our unconstrained logits and equal
    one of its outcomes; at tie pixels the reference's foreground object must be one of the tied ones; elsewhere
    the usual bound holds (at most 0.01% of mask pixels flipped)."""
    assert torch.equal(masks, non_overlapping(raw))
    if raw.shape[0] < 2:  # one object (the first box): the constraint changes nothing, no ties exist
        check_masks(masks, record)
        return
    tol = 2e-3  # both sides' logits are within 1e-3 of the truth
    flat, probe = masks.reshape(-1), record["logits"]
    logits = raw.reshape(raw.shape[0], -1)
    top2 = logits.topk(2, dim=0).values
    tie = (top2[0] - top2[1]) <= tol  # per pixel
    index = probe["sample_index"]
    off = (flat[index] - probe["sample"]).abs() > 1e-3
    pixels = logits.shape[1]
    for i, want in zip(index[off].tolist(), probe["sample"][off].tolist()):
        obj, pixel = divmod(i, pixels)
        assert tie[pixel], f"sample {i} differs by {abs(float(flat[i]) - want):.3g} and is no tie"
        mine = float(logits[obj, pixel])
        assert min(abs(want - mine), abs(want - min(mine, -10.0))) <= 1e-3
    positive = torch.from_numpy(np.unpackbits(record["positive_packed"].numpy())[: flat.numel()].astype(bool))
    positive = positive.view(logits.shape)
    flipped = positive != (flat.view(logits.shape) > 0)
    at_ties = flipped[:, tie].any(0)
    for pixel in tie.nonzero()[:, 0][at_ties].tolist():
        chosen = positive[:, pixel].nonzero()[:, 0].tolist()
        assert len(chosen) <= 1  # the reference's masks do not overlap either
        for obj in chosen:
            assert float(logits[obj, pixel]) >= float(top2[0, pixel]) - tol and float(logits[obj, pixel]) > -1e-3
    elsewhere = int(flipped[:, ~tie].sum())
    assert elsewhere <= 1e-4 * flat.numel(), f"{elsewhere} of {flat.numel()} mask pixels differ away from ties"


def check(got: tuple, record: dict) -> None:
    if len(got) == 3:
        check_constrained(got[1], got[2], record)
    else:
        check_masks(got[1], record)


@pytest.mark.parametrize("case,index", CASE_STEPS)
def test_switch_parity(case, index):
    steps, outputs = replayed(case)
    step, got = steps[index], outputs[index]
    if None in got:
        assert got[None][0] == step["out_obj_ids"]
        check(got[None], step["masks"])
    else:
        assert list(got) == list(step["masks"])
        for frame_idx, record in step["masks"].items():
            assert got[frame_idx][0] == step["out_obj_ids"]
            check(got[frame_idx], record)


def test_correction_kept_only_as_conditioning_frame():
    """The user-visible difference: with the switch, frame 3 keeps the correction in later propagations."""
    for case, kept in (("correct_as_cond", True), ("default_flags", False)):
        _, outputs = replayed(case)
        correction = outputs[2][None][1] > 0
        for later in (outputs[3], outputs[4]):
            same = torch.equal(later[3][1] > 0, correction)
            assert same == kept, case


def test_non_overlap_masks_disjoint():
    _, outputs = replayed("non_overlap_masks")
    for out in outputs[1:]:
        for _, masks, _ in out.values():
            assert masks.shape[0] == 2
            assert not ((masks[0] > 0) & (masks[1] > 0)).any()


def test_non_overlapping_rule():
    logits = torch.tensor([[3.0, -1.0, 5.0, -20.0], [4.0, 2.0, 1.0, -30.0]]).view(2, 1, 1, 4)
    out = non_overlapping(logits)
    # the higher logit keeps its value; the other is capped at -10 (values already below stay)
    assert out.view(2, 4).tolist() == [[-10.0, -10.0, 5.0, -20.0], [4.0, 2.0, -10.0, -30.0]]
    assert torch.equal(non_overlapping(logits[:1]), logits[:1])


# ---------------------------------------------------------------------------------------------- clearing memories
NUM_FRAMES = 18  # > 2 * num_maskmem + 1 frames around the correction at frame 5, so some lie outside the window
CORRECTION = 5


@pytest.fixture(scope="module")
def tiny():
    return tiny_sam2(seed=5)


@pytest.fixture(scope="module")
def clip():
    return [read_image(data_file(f"videos/bedroom_frames/{i:05d}.jpg")) for i in range(NUM_FRAMES)]


def correction_mask():
    mask = np.zeros((540, 960), dtype=bool)
    mask[250:450, 150:420] = True
    return mask


def tracked_then_corrected(model, frames, objects=1, **switches):
    """Prompt `objects` objects on frame 0, propagate, then give object 1 a mask on frame 5; returns the predictor
    and the state before the next propagation."""
    predictor = VideoPredictor(model, fill_hole_area=0, **switches)
    state = predictor.init_state(frames)
    for obj_id in range(1, objects + 1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=[[210 + 300 * (obj_id - 1), 350]], labels=[1])
    list(predictor.propagate_in_video(state, progress=False))
    predictor.add_new_mask(state, CORRECTION, 1, correction_mask())
    return predictor, state


def consolidate(predictor, state):
    """Move the new prompt into memory (what starting a propagation does) without tracking a frame near it."""
    last = NUM_FRAMES - 1
    next(predictor.propagate_in_video(state, start_frame_idx=last, reverse=True, max_frame_num_to_track=0,
                                      progress=False))


def test_clear_around_input_drops_the_memories_within_num_maskmem(tiny, clip, one_thread):
    radius = tiny.num_maskmem
    for switches, cleared in (({}, False), ({"clear_non_cond_mem_around_input": True}, True)):
        predictor, state = tracked_then_corrected(tiny, clip, add_all_frames_to_correct_as_cond=True, **switches)
        assert sorted(state.objects[0].non_cond) == list(range(1, NUM_FRAMES))
        consolidate(predictor, state)
        kept = sorted(state.objects[0].non_cond)
        outside = [t for t in range(1, NUM_FRAMES) if abs(t - CORRECTION) > radius]
        if cleared:
            assert kept == outside  # frames 1..12 are gone (frame 5 became a conditioning frame)
        else:
            assert kept == [t for t in range(1, NUM_FRAMES) if t != CORRECTION]
        assert CORRECTION in state.objects[0].cond


def test_clear_keeps_a_non_conditioning_correction(tiny, clip, one_thread):
    # without add_all_frames_to_correct_as_cond the correction is a tracked frame: its own result stays
    predictor, state = tracked_then_corrected(tiny, clip, clear_non_cond_mem_around_input=True)
    consolidate(predictor, state)
    radius = tiny.num_maskmem
    assert sorted(state.objects[0].non_cond) == [CORRECTION] + [t for t in range(1, NUM_FRAMES)
                                                                if abs(t - CORRECTION) > radius]


def test_clear_with_several_objects_needs_multi_obj(tiny, clip, one_thread):
    radius = tiny.num_maskmem
    outside = [t for t in range(1, NUM_FRAMES) if abs(t - CORRECTION) > radius]
    for multi in (False, True):
        predictor, state = tracked_then_corrected(tiny, clip, objects=2, add_all_frames_to_correct_as_cond=True,
                                                  clear_non_cond_mem_around_input=True,
                                                  clear_non_cond_mem_for_multi_obj=multi)
        consolidate(predictor, state)
        obj1, obj2 = (sorted(o.non_cond) for o in state.objects)
        if multi:  # every object's memories around the prompted frame go, also those of object 2 (whose own
            # result on the prompted frame stays, as the legacy predictor keeps every object's output there)
            assert obj1 == outside and obj2 == [CORRECTION] + outside
        else:  # the legacy rule: with several objects nothing is cleared
            assert obj1 == [t for t in range(1, NUM_FRAMES) if t != CORRECTION]
            assert obj2 == list(range(1, NUM_FRAMES))


def test_clear_makes_frames_after_the_input_track_from_the_prompts_alone(tiny, clip, one_thread):
    """After the clearing, frame 6 onwards is tracked from the two conditioning frames only, exactly as in a fresh
    session prompted on frames 0 and 5 and propagated from frame 5; without the clearing the old memories of
    frames 1-4 still steer those frames."""
    fresh = VideoPredictor(tiny, fill_hole_area=0)
    state = fresh.init_state(clip)
    fresh.add_new_points_or_box(state, 0, 1, points=[[210, 350]], labels=[1])
    fresh.add_new_mask(state, CORRECTION, 1, correction_mask())
    expected = {f: m for f, _, m in fresh.propagate_in_video(state, start_frame_idx=CORRECTION, progress=False)}

    for clear in (True, False):
        predictor, state = tracked_then_corrected(tiny, clip, add_all_frames_to_correct_as_cond=True,
                                                  clear_non_cond_mem_around_input=clear)
        got = {f: m for f, _, m in predictor.propagate_in_video(state, progress=False)}
        diffs = [float((got[f] - expected[f]).abs().max()) for f in range(CORRECTION, NUM_FRAMES)]
        if clear:
            assert max(diffs) <= 1e-5, diffs
        else:
            assert diffs[0] == 0.0 and max(diffs[1:]) > 1e-2, diffs  # the prompted frame itself is the same
