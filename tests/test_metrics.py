"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from pettk.metrics import background_variability, contrast_recovery, nrmse, poisson_deviance, psnr, ssim


def test_psnr_and_nrmse_by_hand():
    ref = np.array([[0.0, 2.0], [4.0, 2.0]])
    x = np.array([[0.0, 2.0], [3.0, 2.0]])
    mse = 1.0 / 4
    assert psnr(x, ref) == pytest.approx(10 * math.log10(16 / mse))
    assert psnr(x, ref, data_range=2.0) == pytest.approx(10 * math.log10(4 / mse))
    assert psnr(ref, ref) == math.inf
    assert nrmse(x, ref) == pytest.approx(1.0 / math.sqrt(24))
    assert nrmse(x, ref, norm="min-max") == pytest.approx(math.sqrt(mse) / 4)
    assert nrmse(x, ref, norm="mean") == pytest.approx(math.sqrt(mse) / 2)
    # DREAM's protocol: each image divided by its own maximum, data range 1
    assert psnr(2 * ref, ref, normalise="max") == math.inf
    assert psnr(torch.tensor(x), torch.tensor(ref)) == pytest.approx(psnr(x, ref))


def test_ssim_identity_and_range(rng):
    ref = rng.random((32, 32))
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisy = ref + 0.3 * rng.standard_normal(ref.shape)
    assert 0 < ssim(noisy, ref) < 0.9
    assert ssim(3 * ref, ref, normalise="max") == pytest.approx(1.0)


def test_contrast_recovery_and_background_variability():
    img = np.ones((20, 20))
    hot = np.zeros_like(img, dtype=bool)
    hot[2:5, 2:5] = True
    bg = np.zeros_like(hot)
    bg[10:18, 10:18] = True
    img[hot] = 4.0
    assert contrast_recovery(img, hot, bg, 4.0) == pytest.approx(1.0)
    img2 = img.copy()
    img2[hot] = 2.5
    assert contrast_recovery(img2, hot, bg, 4.0) == pytest.approx(0.5)
    cold = img.copy()
    cold[hot] = 0.25
    assert contrast_recovery(cold, hot, bg, 0.0) == pytest.approx(0.75)
    rois = [np.zeros_like(hot) for _ in range(3)]
    for k, r in enumerate(rois):
        r[10 + 2 * k:12 + 2 * k, 10:12] = True
    noisy = img.copy()
    noisy[rois[0]], noisy[rois[1]], noisy[rois[2]] = 0.9, 1.0, 1.1
    assert background_variability(noisy, rois) == pytest.approx(np.std([0.9, 1.0, 1.1], ddof=1) / 1.0)
    with pytest.raises(ValueError, match="needs at least 2 masks"):
        background_variability(img, rois[:1])
    with pytest.raises(ValueError, match="hot_mask is empty"):
        contrast_recovery(img, np.zeros_like(hot), bg, 4.0)


def test_deviance_and_errors():
    y = np.array([1.0, 2.0, 0.0])
    assert poisson_deviance(y, y + 0.0) == pytest.approx(0.0, abs=1e-12)
    assert poisson_deviance(y, np.array([2.0, 2.0, 1.0])) == pytest.approx(2 * (math.log(0.5) + 1 + 1))
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="norm must be"):
        nrmse(np.ones(3), np.ones(3), norm="l1")
