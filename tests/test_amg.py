"""runners/amg.py's numpy helpers equal segment_anything's and torchvision's, value for value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from segment_anything.utils import amg as sam_amg

from runners import amg
from runners.outputs import masks_to_boxes_xyxy
from tests.photos import small_photo_rgb


def random_masks(seed: int, n: int = 12, h: int = 37, w: int = 53) -> np.ndarray:
    """Blobs of various sizes, an empty mask, a full one, and ones touching each edge."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n, h, w)) < rng.random((n, 1, 1)) ** 3
    masks[0] = False
    masks[1] = True
    masks[2, :, 0] = masks[3, -1, :] = True
    return masks


@pytest.mark.parametrize("seed", range(3))
def test_boxes_are_segment_anythings(seed):
    masks = random_masks(seed)
    expected = sam_amg.batched_mask_to_box(torch.as_tensor(masks)).numpy()
    np.testing.assert_array_equal(masks_to_boxes_xyxy(masks), expected)
    assert masks_to_boxes_xyxy(masks[:0]).shape == (0, 4)


def test_nms_is_torchvisions_with_ties_and_empty_boxes():
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 300, (400, 2))
    boxes = np.concatenate([corners, corners + rng.integers(0, 120, (400, 2))], axis=1)
    boxes[:20] = 0  # empty masks' boxes: 0/0 overlaps, never suppressed
    for scores in (rng.random(400).astype(np.float32), rng.integers(0, 3, 400).astype(np.float32)):
        for threshold in (0.0, 0.3, 0.7, 1.0):
            expected = torchvision.ops.nms(torch.as_tensor(boxes).float(), torch.as_tensor(scores), threshold).numpy()
            np.testing.assert_array_equal(amg.nms(boxes, scores, threshold), expected)
    assert amg.nms(np.zeros((0, 4)), np.zeros(0, np.float32), 0.7).shape == (0,)


def test_the_threshold_is_compared_in_float64():
    """An IoU of 30/100 is float32(0.3) = 0.30000001: above 0.3 as a double (suppressed), not
    above float32(0.3), which a float32 comparison would use."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 3]])
    scores = np.array([1.0, 0.5], np.float32)
    expected = torchvision.ops.nms(torch.as_tensor(boxes).float(), torch.as_tensor(scores), 0.3).numpy()
    np.testing.assert_array_equal(amg.nms(boxes, scores, 0.3), expected)
    assert expected.tolist() == [0]


@pytest.mark.parametrize("size, layers, overlap", [((267, 400), 1, 512 / 1500), ((1200, 1800), 2, 0.2), ((31, 7), 3, 0.5)])
def test_crop_boxes_and_point_grids_are_segment_anythings(size, layers, overlap):
    assert amg.generate_crop_boxes(size, layers, overlap) == sam_amg.generate_crop_boxes(size, layers, overlap)
    for ours, theirs in zip(amg.build_point_grids(32, layers, 2), sam_amg.build_all_layer_point_grids(32, layers, 2)):
        np.testing.assert_array_equal(ours, theirs)


def test_the_crop_edge_filter_and_uncropping_are_segment_anythings():
    masks = random_masks(4, n=8, h=60, w=90)
    boxes = masks_to_boxes_xyxy(masks)
    for crop_box in ([0, 0, 90, 60], [30, 20, 120, 80], [0, 40, 90, 100]):
        orig = [0, 0, 120, 100]
        expected = sam_amg.is_box_near_crop_edge(torch.as_tensor(boxes), crop_box, orig).numpy()
        np.testing.assert_array_equal(amg.box_near_crop_edge(boxes, crop_box, orig), expected)
        if crop_box != [0, 0, 90, 60]:
            uncropped = sam_amg.uncrop_masks(torch.as_tensor(masks), crop_box, 100, 120).numpy()
            np.testing.assert_array_equal(amg.uncrop_masks(masks, crop_box, 100, 120), uncropped)


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_small_region_removal_is_segment_anythings(mode):
    mask = small_photo_rgb("dog")[..., 1] > 120  # a real photo's ragged regions and holes
    for area in (10, 300, 10**6):
        ours, changed = amg.remove_small_regions(mask, area, mode)
        theirs, their_changed = sam_amg.remove_small_regions(mask, area, mode)
        assert changed == their_changed
        np.testing.assert_array_equal(ours, theirs)
