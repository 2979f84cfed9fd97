"""The image-space Gaussian PSF."""

import numpy as np
import pytest
import torch

import pettk
from pettk.psf import GaussianPSF


def measured_fwhm(profile, spacing):
    """FWHM of a peaked 1D profile by linear interpolation of the half-maximum crossings."""
    peak = int(np.argmax(profile))
    half = profile[peak] / 2
    left = peak
    while profile[left] > half:
        left -= 1
    right = peak
    while profile[right] > half:
        right += 1
    x_left = left + (half - profile[left]) / (profile[left + 1] - profile[left])
    x_right = right - 1 + (profile[right - 1] - half) / (profile[right - 1] - profile[right])
    return (x_right - x_left) * spacing


def test_blurred_point_has_the_requested_fwhm():
    grid = pettk.ImageGrid((61, 61, 41), (1.0, 1.0, 2.0))
    fwhm = (4.0, 6.0, 9.0)
    psf = GaussianPSF(grid, fwhm)
    x = torch.zeros(grid.shape, dtype=torch.float64)
    x[30, 30, 20] = 1.0
    y = psf(x).numpy()
    profiles = [y[:, 30, 20], y[30, :, 20], y[30, 30, :]]
    for axis, (profile, f) in enumerate(zip(profiles, fwhm)):
        assert measured_fwhm(profile, grid.voxel_size_mm[axis]) == pytest.approx(f, rel=0.05)
    assert y.sum() == pytest.approx(1.0, rel=1e-12)


def test_psf_is_self_adjoint(rng):
    grid = pettk.ImageGrid((20, 17, 9), (2.0, 2.5, 3.0))
    psf = GaussianPSF(grid, (5.0, 3.0, 7.0))
    x = torch.from_numpy(rng.random(grid.shape))
    y = torch.from_numpy(rng.random(grid.shape))
    lhs = float((psf.forward(x) * y).sum())
    rhs = float((x * psf.adjoint(y)).sum())
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_zero_fwhm_is_identity_and_batches_work(rng):
    grid = pettk.ImageGrid((8, 9), 2.0)
    x = torch.from_numpy(rng.random((3,) + grid.shape))
    assert GaussianPSF(grid, 0.0).is_identity
    assert GaussianPSF(grid, 0.0)(x) is x
    only_y = GaussianPSF(grid, (0.0, 4.0))(x)
    assert only_y.shape == x.shape
    bumped = x.clone()
    bumped[:, 2, 4] += 1.0  # blurring along y only: row 2 changes, no other row does
    changed = (GaussianPSF(grid, (0.0, 4.0))(bumped) - only_y).abs().amax(dim=(0, 2))
    assert changed[2] > 0.1 and float(changed[[0, 1, 3, 4, 5, 6, 7]].max()) < 1e-12
    torch.testing.assert_close(only_y[1], GaussianPSF(grid, (0.0, 4.0))(x[1]))


def test_psf_rejects_bad_fwhm():
    grid = pettk.ImageGrid((8, 9), 2.0)
    with pytest.raises(ValueError, match=r"fwhm_mm must be >= 0 on every axis, got \[-1.0, 2.0\]"):
        GaussianPSF(grid, (-1.0, 2.0))
    with pytest.raises(ValueError, match="fwhm_mm must have 2 entries"):
        GaussianPSF(grid, (1.0, 2.0, 3.0))
    with pytest.raises(TypeError, match="grid must be an ImageGrid"):
        GaussianPSF((8, 9), 1.0)
