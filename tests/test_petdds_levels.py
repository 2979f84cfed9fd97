"""PET-DDS's intensity level: activity_level and the training reference (reference_statistics) share
one implementation (pettk.priors.petdds.reference._levels), edge cases included: all-zero images,
objects under 1 % of the voxels (q99 = 0), empty masks, empty images."""

import numpy as np
import pytest
import torch

from pettk.priors.petdds import activity_level, reference_statistics
from pettk.priors.petdds.reference import _levels


def _image(zeros: int, ones: int, fours: int, shape=(10, 10)) -> torch.Tensor:
    """``zeros`` voxels of 0, ``ones`` of 1 and ``fours`` of 4, shuffled (seed 0) into ``shape``."""
    values = torch.tensor([0.0] * zeros + [1.0] * ones + [4.0] * fours)
    return values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))].reshape(shape)


def test_activity_level_by_hand():
    x = _image(50, 30, 20)                  # q99 = 4: the mask is {x > 0.2 * 4} or {x > 0.3 * 4}
    assert activity_level(x) == pytest.approx((30 * 1 + 20 * 4) / 50, rel=1e-15)      # 2.2
    assert activity_level(x, 0.3) == 4.0
    assert activity_level(x.numpy()) == activity_level(x)                              # numpy in
    assert activity_level(x.reshape(4, 5, 5)) == activity_level(x)                     # a volume
    assert activity_level(torch.zeros(4, 4)) == 0.0                                    # no positive voxel
    assert activity_level(-torch.ones(3, 3)) == 0.0
    assert activity_level(torch.full((5, 5), 2.0), mask_threshold=1.0) == 0.0          # empty mask
    # an object under 1 % of the voxels: q99 is 0, the maximum stands in for it
    sparse = torch.zeros(32, 32)
    sparse[3, 4], sparse[10, 10] = 10.0, 1.0
    assert activity_level(sparse) == 10.0 and activity_level(sparse, 0.05) == 5.5
    with pytest.raises(ValueError, match="activity_level of an empty image"):
        activity_level(torch.zeros(0, 4))


def test_batched_levels_are_activity_level_of_each_image():
    g = torch.Generator().manual_seed(1)
    sparse = torch.zeros(16, 16)
    sparse[5, 5] = 3.0
    images = torch.stack([torch.rand(16, 16, generator=g), torch.zeros(16, 16), sparse,
                          torch.rand(16, 16, generator=g) - 0.5, _image(156, 60, 40, (16, 16))])
    levels = _levels(images, 0.2)
    assert levels.dtype == torch.float64 and levels.shape == (5,)
    assert levels.tolist() == [activity_level(im, 0.2) for im in images]
    assert levels[1] == 0.0 and levels[2] == 3.0
    assert float(levels[4]) == pytest.approx((60 + 160) / 100, rel=1e-15)


def test_reference_statistics_skips_images_without_level():
    x, y = _image(50, 30, 20), _image(20, 40, 40)
    with_zero = torch.stack([x, torch.zeros(10, 10), y])
    stats = reference_statistics(with_zero)
    assert stats["n_slices"] == 3 and stats["image_size"] == (10, 10)
    # the median of the two levels with one (torch's median: the lower of two)
    assert stats["reference_mean"] == min(activity_level(x), activity_level(y))
    # a slice with a sparse object counts with the level activity_level gives it
    sparse = torch.zeros(1, 32, 32)
    sparse[0, 3, 4] = 10.0
    assert reference_statistics(sparse)["reference_mean"] == 10.0
    with pytest.raises(ValueError, match="the training images are all zero"):
        reference_statistics(np.zeros((3, 8, 8), dtype=np.float32))
