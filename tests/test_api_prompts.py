"""Ultralytics prompt normalisation: nesting depth -> objects vs. points per object, and clear errors."""
import numpy as np
import pytest

from masklet.api.prompts import PromptError, check_prompts_inside, normalize_prompts


def test_one_point_is_one_object():
    p = normalize_prompts(points=[900, 370], labels=[1])
    assert p.points.shape == (1, 1, 2) and p.labels.tolist() == [[1]]
    assert p.points[0, 0].tolist() == [900, 370]


def test_list_of_points_is_one_object_each():
    p = normalize_prompts(points=[[400, 370], [900, 370]], labels=[1, 1])
    assert p.points.shape == (2, 1, 2) and p.labels.tolist() == [[1], [1]]
    assert p.points[1, 0].tolist() == [900, 370]


def test_nested_points_are_one_object_with_several_points():
    p = normalize_prompts(points=[[[400, 370], [900, 370]]], labels=[[1, 0]])
    assert p.points.shape == (1, 2, 2) and p.labels.tolist() == [[1, 0]]


def test_flat_labels_for_single_multi_point_object():
    p = normalize_prompts(points=[[[400, 370], [900, 370]]], labels=[1, 0])
    assert p.labels.tolist() == [[1, 0]]


def test_default_and_scalar_labels():
    assert normalize_prompts(points=[920, 470]).labels.tolist() == [[1]]
    assert normalize_prompts(points=[920, 470], labels=1).labels.tolist() == [[1]]
    assert normalize_prompts(points=[[1, 2], [3, 4]], labels=0).labels.tolist() == [[0], [0]]
    assert normalize_prompts(points=[[[1, 2], [3, 4]]]).labels.tolist() == [[1, 1]]


def test_numpy_and_tensor_inputs():
    import torch

    p = normalize_prompts(points=np.array([[1, 2], [3, 4]]), labels=torch.tensor([1, 0]))
    assert p.points.shape == (2, 1, 2) and p.labels.tolist() == [[1], [0]]


def test_boxes():
    assert normalize_prompts(bboxes=[100, 100, 200, 200]).boxes.shape == (1, 4)
    assert normalize_prompts(bboxes=[[0, 0, 5, 5], [1, 1, 9, 9]]).boxes.shape == (2, 4)
    assert normalize_prompts().empty


def test_boxes_and_points_pair_up_or_broadcast():
    p = normalize_prompts(points=[[[5, 5], [6, 6]]], labels=[[1, 0]], bboxes=[[0, 0, 10, 10], [2, 2, 8, 8]])
    assert p.points.shape == (2, 2, 2) and p.labels.shape == (2, 2) and p.boxes.shape == (2, 4)
    p = normalize_prompts(points=[[1, 1], [2, 2], [3, 3]], bboxes=[0, 0, 10, 10])
    assert p.boxes.shape == (3, 4) and p.points.shape == (3, 1, 2)
    with pytest.raises(PromptError, match="2 bboxes and 3 point groups"):
        normalize_prompts(points=[[1, 1], [2, 2], [3, 3]], bboxes=[[0, 0, 1, 1], [0, 0, 2, 2]])


@pytest.mark.parametrize("points, labels, message", [
    ([[400, 370], [900, 370]], [1], r"labels shape \(1,\) does not match points shape \(2, 2\)"),
    ([900, 370], [1, 1], r"labels shape \(2,\) does not match points shape \(2,\)"),
    ([[[400, 370], [900, 370]]], [[1, 1, 1]], r"labels shape \(1, 3\) does not match points shape \(1, 2, 2\)"),
    ([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], [1, 1], r"need labels of shape \(2, 2\)"),
    ([900, 370, 5], None, r"got shape \(3,\)"),
    ([[[[1, 2]]]], None, r"got shape \(1, 1, 1, 2\)"),
    ([[1, 2], [3]], None, "ragged"),
    ([], None, "empty"),
    ([1, 2], [2], "1 \\(foreground\\) or 0 \\(background\\)"),
    (["a", "b"], None, "numbers"),
    ([float("nan"), 2], None, "NaN"),
])
def test_point_errors_name_the_shapes(points, labels, message):
    with pytest.raises(PromptError, match=message):
        normalize_prompts(points=points, labels=labels)


def test_prompt_error_is_a_value_error():
    assert issubclass(PromptError, ValueError)


def test_labels_without_points():
    with pytest.raises(PromptError, match="labels were given without points"):
        normalize_prompts(labels=[1])


@pytest.mark.parametrize("bboxes, message", [
    ([1, 2, 3], r"got shape \(3,\)"),
    ([[1, 2, 3, 4, 5]], r"got shape \(1, 5\)"),
    ([10, 10, 5, 20], "x2 >= x1"),
    ([], r"got shape \(0,\)"),
])
def test_box_errors(bboxes, message):
    with pytest.raises(PromptError, match=message):
        normalize_prompts(bboxes=bboxes)


def test_inside_checks():
    check_prompts_inside(normalize_prompts(points=[10, 10], bboxes=[-5, -5, 3, 3]), 20, 30)
    with pytest.raises(PromptError, match=r"point \[40.0, 10.0\] is outside the image, which is 30x20 pixels"):
        check_prompts_inside(normalize_prompts(points=[[1, 1], [40, 10]]), 20, 30)
    with pytest.raises(PromptError, match="entirely outside"):
        check_prompts_inside(normalize_prompts(bboxes=[50, 50, 60, 60]), 20, 30)
