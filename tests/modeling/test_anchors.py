"""detkit/modeling/anchors.py: AnchorGenerator against torchvision's, shapes from sizes x ratios, caching."""

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detkit.modeling.anchors import AnchorGenerator, shapes_from_sizes_ratios, strides_for_features

FPN_STRIDES = [4, 8, 16, 32, 64]


def _torchvision_anchors(sizes, ratios, image_hw, strides):
    """torchvision's anchors for one padded image of size image_hw with one feature map per stride."""
    tv = TVAnchorGenerator(sizes=tuple(tuple(s) for s in sizes), aspect_ratios=(tuple(ratios),) * len(sizes))
    images = ImageList(torch.zeros(1, 3, *image_hw), [tuple(image_hw)])
    feats = [torch.zeros(1, 1, image_hw[0] // s, image_hw[1] // s) for s in strides]
    per_level = tv.grid_anchors([f.shape[-2:] for f in feats],
                                [[torch.tensor(s), torch.tensor(s)] for s in strides])
    full = tv(images, feats)[0]
    return per_level, full, [f.shape[-2:] for f in feats]


@pytest.mark.parametrize("sizes, ratios", [
    ([[32], [64], [128], [256], [512]], [0.5, 1.0, 2.0]),
    ([[32, 40, 50], [64, 80, 101], [128, 161, 203], [256, 322, 406], [512, 645, 812]], [0.5, 1.0, 2.0]),
    ([[24], [48], [96], [192], [384]], [0.25, 0.7, 1.0, 3.0]),
])
def test_parity_with_torchvision_when_rounding(sizes, ratios):
    image_hw = (256, 320)
    tv_levels, tv_full, grid = _torchvision_anchors(sizes, ratios, image_hw, FPN_STRIDES)
    gen = AnchorGenerator(shapes=shapes_from_sizes_ratios(sizes, ratios), strides=FPN_STRIDES, offset=0.0,
                          round_base=True)
    ours = gen([tuple(g) for g in grid])
    assert gen.num_anchors_per_location == len(ratios) * len(sizes[0])
    for mine, theirs in zip(ours, tv_levels):
        torch.testing.assert_close(mine, theirs.float(), rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(ours), tv_full, rtol=0, atol=0)


def test_default_keeps_exact_shapes_known_difference_is_rounding():
    """Without rounding the anchors differ from torchvision's by at most half a pixel per coordinate,
    and only where w/2 or h/2 is not an integer (e.g. ratio 0.5: 45.25 x 22.63)."""
    sizes, ratios = [[32], [64], [128], [256], [512]], [0.5, 1.0, 2.0]
    _, tv_full, grid = _torchvision_anchors(sizes, ratios, (128, 128), FPN_STRIDES)
    ours = torch.cat(AnchorGenerator(shapes=shapes_from_sizes_ratios(sizes, ratios), strides=FPN_STRIDES)(
        [tuple(g) for g in grid]))
    diff = (ours - tv_full).abs()
    assert diff.max() <= 0.5 + 1e-6
    assert diff.max() > 0.1  # the rounding difference is real
    square = torch.arange(len(ours)) % 3 == 1  # ratio 1: w/2, h/2 are integers, no difference
    assert diff[square].max() == 0


def test_shapes_from_sizes_ratios_order_and_area():
    shapes = shapes_from_sizes_ratios([[10, 20]], [0.5, 2.0])
    # ratio-major, then size (torchvision's order); aspect h / w; area size^2
    expected = [[10 / math.sqrt(0.5), 10 * math.sqrt(0.5)], [20 / math.sqrt(0.5), 20 * math.sqrt(0.5)],
                [10 / math.sqrt(2.0), 10 * math.sqrt(2.0)], [20 / math.sqrt(2.0), 20 * math.sqrt(2.0)]]
    torch.testing.assert_close(torch.tensor(shapes[0]), torch.tensor(expected))


def test_order_within_level_and_offset():
    gen = AnchorGenerator(shapes=[[[2.0, 4.0], [6.0, 6.0]]], strides=[10], offset=0.5)
    (anchors,) = gen([(2, 3)])
    assert anchors.shape == (2 * 3 * 2, 4)
    # position (row 0, col 1) -> centre (15, 5); shape 1 (6x6)
    torch.testing.assert_close(anchors[1 * 2 + 1], torch.tensor([12.0, 2.0, 18.0, 8.0]))
    # position (row 1, col 0) -> centre (5, 15); shape 0 (2x4)
    torch.testing.assert_close(anchors[3 * 2 + 0], torch.tensor([4.0, 13.0, 6.0, 17.0]))
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert set(centres[:, 0].tolist()) == {5.0, 15.0, 25.0}


def test_cache_per_size_and_set_shapes():
    gen = AnchorGenerator(shapes=shapes_from_sizes_ratios([[32], [64]], [1.0]), strides=[8, 16])
    a = gen([(4, 4), (2, 2)])
    b = gen([(4, 4), (2, 2)])
    assert all(x is y for x, y in zip(a, b))
    c = gen([(5, 4), (3, 2)])
    assert c[0].shape == (20, 4) and c[0] is not a[0]
    assert gen([(4, 4), (2, 2)], dtype=torch.float64)[0].dtype == torch.float64
    gen.set_shapes([[[10.0, 20.0]], [[30.0, 30.0]]])
    d = gen([(4, 4), (2, 2)])
    torch.testing.assert_close(d[0][0], torch.tensor([-5.0, -10.0, 5.0, 10.0]))
    torch.testing.assert_close(gen.shapes, torch.tensor([[[10.0, 20.0]], [[30.0, 30.0]]]))
    with pytest.raises(ValueError):
        gen.set_shapes([[[10.0, 20.0], [1.0, 1.0]], [[30.0, 30.0], [1.0, 1.0]]])


def test_empty_feature_map_and_bad_input():
    gen = AnchorGenerator(shapes=[[[4.0, 4.0]]], strides=[4])
    assert gen([(0, 3)])[0].shape == (0, 4)
    with pytest.raises(ValueError):
        gen([(1, 1), (1, 1)])
    with pytest.raises(ValueError):
        AnchorGenerator(shapes=[[[4.0, -1.0]]], strides=[4])
    with pytest.raises(ValueError):
        AnchorGenerator(shapes=[[[4.0, 4.0]]], strides=[4, 8])
    assert strides_for_features("fpn") == FPN_STRIDES
    assert strides_for_features("c4") == [16]
    with pytest.raises(ValueError):
        strides_for_features("c3")
