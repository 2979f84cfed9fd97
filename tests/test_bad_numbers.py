"""Numeric knobs and inputs are validated where they enter (issue 31, items 3 and 4).

One test per reproducer of the issue, then a small property-based fuzz over numeric knobs: every
call either raises a clear ``ValueError``/``TypeError`` or returns a finite result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pettk import ForwardModel, ImageGrid, ParallelBeam2D, Projector
from pettk.likelihood import poisson_deviance, poisson_nll
from pettk.metrics import background_variability, contrast_recovery
from pettk.psf import GaussianPSF
from pettk.recon import osem, post_filter, quadratic, rdp, tv
from pettk.recon._common import prepare
from pettk.recon.em import em_step
from pettk.recon.fbp import ramp_filter
from pettk.sim.phantoms import shepp_logan_2d

G2 = ImageGrid((16, 16), 4.0)
P2 = Projector(G2, ParallelBeam2D(12, 23, 4.0))
FM2 = ForwardModel(P2)


def _x2(dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(shepp_logan_2d(G2) + 0.1, dtype=dtype)


def _y2() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.poisson(FM2.forward(_x2()) * 10.0, generator=gen)


# -- item 3: numeric knobs -------------------------------------------------------------------------------

def test_poisson_nll_eps_must_be_positive():
    y = _y2()
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        poisson_nll(y, torch.zeros_like(y), eps=0.0)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        poisson_deviance(y, torch.zeros_like(y), eps=math.nan)
    assert math.isfinite(float(poisson_nll(y, torch.zeros_like(y))))


def test_ramp_filter_spacing():
    with pytest.raises(ValueError, match="spacing_mm must be a finite number > 0"):
        ramp_filter(64, math.nan)
    with pytest.raises(ValueError, match="spacing_mm must be a finite number > 0"):
        ramp_filter(64, 0.0)
    with pytest.raises(ValueError, match=r"n_radial must be an integer <= \d+"):
        ramp_filter(2 ** 40, 1.0)
    h = ramp_filter(np.int64(64), np.float32(1.0))
    assert torch.isfinite(h).all()
    assert torch.allclose(h, ramp_filter(64, 1.0))


def test_psf_truncate_and_huge_fwhm():
    with pytest.raises(ValueError, match=r"truncate must be a finite number"):
        GaussianPSF(G2, 3.0, truncate=math.inf)
    with pytest.raises(ValueError, match=r"truncate must be a finite number <= 20"):
        GaussianPSF(G2, 3.0, truncate=1e6)
    with pytest.raises(ValueError, match=r"fwhm_mm\[0\] = 1e\+06 mm is far larger than the image .* <= 640 mm"):
        GaussianPSF(G2, 1e6)
    with pytest.raises(ValueError, match=r"far larger than the image"):
        ForwardModel(P2, psf=1e6)
    out = GaussianPSF(G2, 600.0, truncate=20.0)(_x2())
    assert torch.isfinite(out).all()


def test_rdp_gamma_bounded():
    with pytest.raises(ValueError, match=r"gamma must be a finite number <= 1e\+06 \(the limit\)"):
        rdp(G2, gamma=1e300)
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        rdp(G2, gamma=math.nan)
    with pytest.raises(ValueError, match=r"epsilon must be a finite number <= 1e\+06"):
        rdp(G2, epsilon=1e300)
    with pytest.raises(ValueError, match=r"delta must be a finite number >= 1e-15"):
        tv(G2, delta=1e-300)
    prior = rdp(G2, gamma=1e6, epsilon=np.float32(1e-3))
    for fn in (prior.gradient, prior.hessian_diagonal, prior.curvature_bound):
        assert torch.isfinite(fn(_x2())).all()


def test_supersample_bounded():
    with pytest.raises(ValueError, match="supersample must be an integer <= 16"):
        shepp_logan_2d(G2, supersample=10 ** 6)
    with pytest.raises(TypeError, match="supersample must be an integer"):
        shepp_logan_2d(G2, supersample=2.5)
    assert np.isfinite(shepp_logan_2d(G2, supersample=16)).all()


# -- item 4: inputs checked where they enter --------------------------------------------------------------

def test_nan_images_refused():
    x = _x2()
    x[3, 4] = math.nan
    with pytest.raises(ValueError, match="x contains non-finite values"):
        post_filter(x, G2, 4.0)
    with pytest.raises(ValueError, match="x contains non-finite values"):
        post_filter(x.numpy(), G2, 4.0)
    for prior in (rdp(G2), quadratic(G2), tv(G2)):
        for fn in (prior.value, prior.gradient, prior.hessian_diagonal, prior.gradient_and_hessian_diagonal,
                   prior.curvature_bound):
            with pytest.raises(ValueError, match="x contains non-finite values"):
                fn(x)
    prior = rdp(G2)
    prior.backend = "torch"
    with pytest.raises(ValueError, match="x contains non-finite values"):
        prior.gradient(x)


def test_prior_check_keeps_autograd():
    x = _x2().requires_grad_(True)
    rdp(G2).value(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_integer_tensors_and_bad_x0_are_type_errors():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        rdp(G2).gradient(torch.ones(16, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match="x0 must be a numpy array, a torch tensor or None"):
        osem(FM2, _y2(), 1, 2, x0=object())


def test_masks_must_be_boolean():
    x = _x2().numpy()
    hot = np.zeros((16, 16), dtype=bool)
    hot[6:9, 6:9] = True
    bg = ~hot
    nan_mask = np.full((16, 16), math.nan)
    with pytest.raises(TypeError, match="hot_mask must be a boolean mask, got dtype float64"):
        contrast_recovery(x, nan_mask, bg, 4.0)
    with pytest.raises(ValueError, match=r"background_mask must have shape \(16, 16\)"):
        contrast_recovery(x, hot, bg[:8], 4.0)
    with pytest.raises(TypeError, match=r"background_rois\[1\] must be a boolean mask"):
        background_variability(x, [bg, bg.astype(np.float64)])
    assert math.isfinite(contrast_recovery(x, hot, bg, 4.0))


def test_wrong_shape_y_refused():
    y = _y2()
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 12, 23\), got \(12, 22\)"):
        FM2.adjoint(y[:, :22])
    x = _x2()
    sens = FM2.sensitivity(torch.float64)
    mask = torch.ones(16, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 12, 23\), got \(11, 23\)"):
        em_step(FM2, y[:11], x, sens, mask)


def test_select_accepts_lists():
    sub = P2.subsets(3)[1]
    y = _y2()
    expected = sub.select(y.numpy())
    np.testing.assert_array_equal(sub.select(y.numpy().tolist()), expected)
    with pytest.raises(TypeError, match="y_full must be a numpy array"):
        sub.select(object())


def test_unavailable_device_refused():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' is not available"):
            FM2.to("cuda")
        with pytest.raises(ValueError, match="device 'cuda' is not available"):
            FM2.sensitivity(torch.float32, "cuda")
    with pytest.raises(ValueError, match="device 'nope' is not a device"):
        FM2.to("nope")
    with pytest.raises(ValueError, match="device 'cuda:99' is not available"):
        FM2.to("cuda:99")
    assert FM2.to("cpu").sensitivity().device.type == "cpu"


def test_counts_near_float32_max_refused_early():
    y = torch.full(tuple(FM2.shape_out), 3e38, dtype=torch.float32)
    with pytest.raises(ValueError, match="total counts .* are too large for torch.float32"):
        osem(FM2, y, 1, 2)
    with pytest.raises(ValueError, match="too large for torch.float32"):
        prepare(FM2, y)


# -- property-based fuzz over numeric knobs --------------------------------------------------------------

_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10 ** 9),
                     st.sampled_from([0.0, -0.0, 1e-300, 1e-15, 1e6, 1e300, np.float32(2.0)]))


def _finite_or_refused(fn):
    try:
        out = fn()
    except (ValueError, TypeError) as err:
        assert str(err)
        return
    assert torch.isfinite(torch.as_tensor(out)).all(), out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fwhm=_numbers, gamma=_numbers, epsilon=_numbers, truncate=_numbers,
       scale=st.floats(min_value=0.0, max_value=1e4))
def test_knobs_refused_or_finite(fwhm, gamma, epsilon, truncate, scale):
    x = _x2(torch.float32) * scale
    _finite_or_refused(lambda: post_filter(x, G2, fwhm))
    _finite_or_refused(lambda: GaussianPSF(G2, fwhm, truncate=truncate)(x))
    _finite_or_refused(lambda: rdp(G2, gamma=gamma, epsilon=epsilon).gradient_and_hessian_diagonal(x)[1])
    _finite_or_refused(lambda: rdp(G2, gamma=gamma, epsilon=epsilon).gradient(x.double()))
    _finite_or_refused(lambda: tv(G2, delta=epsilon).hessian_diagonal(x))
    _finite_or_refused(lambda: ramp_filter(23, fwhm))


def test_recon_inputs_of_the_wrong_kind():
    y = _y2()
    with pytest.raises(TypeError, match="mask must be a boolean image, got dtype object"):
        osem(FM2, y, 1, 2, mask=object())
    with pytest.raises(TypeError, match="mask must be a boolean image, got dtype float64"):
        osem(FM2, y, 1, 2, mask=np.full((16, 16), math.nan))
    with pytest.raises(TypeError, match="y must hold real counts"):
        osem(FM2, y.to(torch.complex64), 1, 2)
    x = osem(FM2, y, 1, 2, mask=(np.ones((16, 16), dtype=bool)).tolist())
    assert torch.isfinite(x).all()


def test_ramp_cutoff_bounded():
    with pytest.raises(ValueError, match=r"cutoff must be a finite number >= 1e-06"):
        ramp_filter(23, 1.0, "hann", 1e-300)
    assert torch.isfinite(ramp_filter(23, 1.0, "hann", 1e-6)).all()


def test_prior_images_too_large_for_the_dtype():
    x = _x2(torch.float32) * 1e20
    with pytest.raises(ValueError, match=r"x holds values up to .* beyond the limit 1.8\d*e\+16 for torch.float32"):
        quadratic(G2).value(x)
    g, h = rdp(G2).gradient_and_hessian_diagonal(x.double())
    assert torch.isfinite(g).all() and torch.isfinite(h).all()
    v = quadratic(G2).value(_x2(torch.float32) * 1e16)
    assert torch.isfinite(v)
