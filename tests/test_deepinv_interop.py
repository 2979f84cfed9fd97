"""pettk.interop.deepinv: pettk's PET model as DeepInverse physics, pettk diffusion nets as denoisers.

Skipped where DeepInverse cannot be imported (it is an optional extra, and it imports torchvision,
which must match the installed torch).
"""

import math

import numpy as np
import pytest
import torch

try:
    import deepinv as dinv
except Exception as err:  # ImportError, or RuntimeError from a torchvision whose compiled ops cannot load
    pytest.skip(f"deepinv not importable ({type(err).__name__}: {err})", allow_module_level=True)

import pettk  # noqa: E402
from pettk import recon  # noqa: E402
from pettk.diffusion import ImageScale, NoiseSchedule  # noqa: E402
from pettk.diffusion.nets import UNet  # noqa: E402
from pettk.interop.deepinv import DiffusionDenoiser, PETPhysics  # noqa: E402
from pettk.likelihood import poisson_nll, poisson_nll_gradient  # noqa: E402
from pettk.metrics import psnr  # noqa: E402
from pettk.sim import shepp_logan_2d  # noqa: E402

GRID = pettk.ImageGrid((32, 32), 2.0)
BEAM = pettk.ParallelBeam2D(n_views=32, n_radial=47, radial_spacing_mm=2.0)


def _problem(counts=1e4, background=0.1, seed=1, psf=3.0):
    """A 2D Shepp-Logan scan: the counts model, its physics, noisy data (B=C=1) and the truth."""
    base = pettk.ForwardModel(pettk.Projector(GRID, BEAM), psf=psf)
    truth = torch.from_numpy(shepp_logan_2d(GRID)).float()
    scale = counts / float(base.linear(truth).sum())
    model = base.with_background(torch.full(BEAM.shape, background), scale=scale)
    physics = PETPhysics(model)
    physics.noise_model.rng = torch.Generator().manual_seed(seed)
    return model, physics, physics(truth[None, None]), truth


# -- the physics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_deepinv_adjointness_test_2d(dtype, tol):
    _, physics, _, _ = _problem()
    u = torch.rand((1, 1) + GRID.shape, dtype=dtype)
    assert float(physics.adjointness_test(u, num_samples=3)) < tol


def test_deepinv_adjointness_test_3d_with_psf_attenuation_and_background(tiny):
    projector = pettk.Projector(tiny.grid, tiny.layout)
    mu = torch.full(tiny.grid.shape, 0.0096, dtype=torch.float64)
    norm = torch.rand(projector.shape_out, dtype=torch.float64)
    model = pettk.ForwardModel(projector, psf=4.0, mu=mu, normalisation=norm,
                               additive=torch.ones(projector.shape_out, dtype=torch.float64))
    physics = PETPhysics(model)
    u = torch.rand((2, 1) + tiny.grid.shape, dtype=torch.float64)
    assert float(physics.adjointness_test(u, num_samples=2)) < 1e-12
    assert physics.background.shape == (1, 1) + projector.shape_out
    x = torch.rand((1, 1) + tiny.grid.shape, dtype=torch.float64)
    torch.testing.assert_close(physics.A(x, add_background=True)[0, 0], model.forward(x[0, 0]))


def test_physics_noise_is_poisson_around_the_expected_counts():
    model, physics, y, truth = _problem(counts=5e4, background=2.0)
    expected = model.forward(truth)
    assert y.shape == (1, 1) + BEAM.shape and bool((y == torch.round(y)).all())
    # mean and variance of the Poisson draw over all bins (both equal ybar)
    z = (y[0, 0] - expected) / expected.sqrt()
    assert abs(float(z.mean())) < 0.05 and abs(float(z.var()) - 1.0) < 0.1
    # gain: y = gain * Poisson(ybar / gain) with normalize_counts
    g = PETPhysics(model, gain=4.0, normalize_counts=True)
    assert bool((torch.remainder(g(truth[None, None]), 4.0) == 0).all())


def test_data_fidelity_is_pettk_poisson_likelihood():
    model, physics, y, truth = _problem(background=0.5)
    x = (truth + 0.2)[None, None].double()
    fidelity = physics.data_fidelity()
    ybar = model.forward(x[0, 0])
    # DeepInverse's KL form equals pettk's negative log-likelihood up to the constant sum(y)
    value = fidelity.fn(x, y.double(), physics)
    np.testing.assert_allclose(float(value), float(poisson_nll(y[0, 0].double(), ybar) - y.sum()), rtol=1e-10)
    grad = fidelity.grad(x, y.double(), physics)
    torch.testing.assert_close(grad[0, 0], poisson_nll_gradient(model, x[0, 0], y[0, 0].double()))


def test_physics_rejects_bad_inputs():
    model, physics, _, _ = _problem()
    with pytest.raises(TypeError, match="ForwardModel"):
        PETPhysics(pettk.Projector(GRID, BEAM))
    with pytest.raises(ValueError, match="gain"):
        PETPhysics(model, gain=0.0)
    with pytest.raises(TypeError, match="tensor"):
        physics.A(np.zeros(GRID.shape, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        physics.A(torch.zeros(1, 1, 31, 32))


# -- DeepInverse's solvers on pettk's physics ---------------------------------------------------------
def test_deepinv_mlem_equals_pettk_mlem_and_improves_on_its_start():
    model, physics, y, truth = _problem()
    x = dinv.optim.MLEM(max_iter=15)(y, physics)  # starts from ones
    assert psnr(x[0, 0], truth) > psnr(torch.ones_like(truth), truth) + 15
    ours = recon.mlem(model, y[0, 0], 15, x0=torch.ones(GRID.shape))
    torch.testing.assert_close(x[0, 0], ours, rtol=1e-4, atol=1e-4 * float(ours.max()))


def test_deepinv_osem_on_split_physics_equals_pettk_osem():
    model, physics, y, _ = _problem()
    x = dinv.optim.OSEM(max_iter=3, num_subsets=4)(physics.split_measurements(y, 4), physics.split(4))
    ours = recon.osem(model, y[0, 0], 3, 4, x0=torch.ones(GRID.shape))
    torch.testing.assert_close(x[0, 0], ours, rtol=1e-4, atol=1e-4 * float(ours.max()))


def test_bsrem_with_a_red_prior_on_split_physics_beats_plain_bsrem():
    """End to end: DeepInverse's BSREM on pettk's view subsets, with a DeepInverse RED prior (its
    TV denoiser), regularises the noisy unregularised iterates (PSNR against the truth)."""
    _, physics, y, truth = _problem(counts=1e4, psf=None)
    ys, parts = physics.split_measurements(y, 4), physics.split(4)
    plain = dinv.optim.BSREM(max_iter=10, num_subsets=4)(ys, parts)
    sensitivity = float(physics.A_adjoint(torch.ones_like(y)).mean())
    prior = dinv.optim.RED(dinv.models.TVDenoiser(n_it_max=30))
    red = dinv.optim.BSREM(prior=prior, lambda_reg=0.3 * sensitivity, g_param=0.1, max_iter=10,
                           num_subsets=4)(ys, parts)
    assert psnr(red[0, 0], truth) > psnr(plain[0, 0], truth) + 2.0


# -- pettk diffusion networks as DeepInverse denoisers ------------------------------------------------
class GaussianOracle(torch.nn.Module):
    """The exact x0 / eps predictor of a diffusion model whose data are N(mu, s^2) per pixel."""

    def __init__(self, schedule, mu, s, prediction):
        super().__init__()
        self.abar = schedule.alphas_cumprod
        self.mu, self.s, self.prediction = mu, s, prediction
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x_t, t):
        a = self.abar[t].reshape(-1, 1, 1, 1).to(x_t)
        x0 = self.mu + a.sqrt() * self.s ** 2 / (a * self.s ** 2 + 1 - a) * (x_t - a.sqrt() * self.mu)
        return x0 if self.prediction == "x0" else (x_t - a.sqrt() * x0) / (1 - a).sqrt()


@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize("scale", [1.0, ImageScale(8.0, "symmetric")], ids=["unit", "symmetric"])
def test_diffusion_denoiser_is_the_mmse_denoiser_at_the_matching_time(prediction, scale):
    """With the exact predictor of a Gaussian data distribution, D(x, sigma) must be the Gaussian
    MMSE denoiser mu + s^2 / (s^2 + sigma^2) (x - mu) -- exactly where sigma^2 = (1 - abar_t) / abar_t
    (the mapping sigma -> t, the sqrt(abar) input scaling and the image scaling are all right)."""
    schedule = NoiseSchedule.cosine(100)
    mu, s = 0.3, 0.2  # network units
    denoiser = DiffusionDenoiser(GaussianOracle(schedule, mu, s, prediction), schedule, prediction=prediction,
                                 scale=scale)
    image_scale = scale if isinstance(scale, ImageScale) else ImageScale(scale)
    slope = (1.0 if image_scale.range == "unit" else 2.0) / image_scale.scale
    abar = schedule.alphas_cumprod
    t = torch.tensor([10, 37, 80])
    sigma_net = ((1 - abar[t]) / abar[t]).sqrt()
    assert torch.equal(denoiser.sigma_to_t(sigma_net), t)
    x = image_scale.to_activity(torch.randn(3, 1, 8, 8, dtype=torch.float64) * 0.5 + mu)  # activity units
    out = denoiser(x, sigma_net / slope)  # sigma per sample, in x's units
    x_net = image_scale.from_activity(x)
    w = (s ** 2 / (s ** 2 + sigma_net ** 2)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, image_scale.to_activity(mu + w * (x_net - mu)), rtol=1e-10, atol=1e-10)
    # one sample at a time gives the same numbers; sigma = 0 is the identity
    torch.testing.assert_close(denoiser(x[1:2], float(sigma_net[1] / slope)), out[1:2])
    torch.testing.assert_close(denoiser(x, 0.0), x)


def test_sigma_to_t_is_monotone_and_clamped():
    schedule = NoiseSchedule.linear(50)
    denoiser = DiffusionDenoiser(torch.nn.Identity(), schedule)
    t = denoiser.sigma_to_t(torch.logspace(-4, 3, 40))
    assert bool((t[1:] >= t[:-1]).all()) and int(t[0]) == 0 and int(t[-1]) == 49


def test_pettk_unet_denoiser_in_a_deepinv_algorithm():
    torch.manual_seed(0)
    net = UNet(1, 1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), num_heads=1)
    schedule = NoiseSchedule.cosine(50)
    denoiser = DiffusionDenoiser(net.eval(), schedule, prediction="x0", scale=2.0, clip=(0.0, 1.0))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = denoiser(x, torch.tensor([0.05, 0.4]))
    assert out.shape == x.shape and bool(torch.isfinite(out).all()) and float(out.max()) <= 2.0 + 1e-6
    model, physics, y, _ = _problem()
    with torch.no_grad():
        rec = dinv.optim.MLEM(prior=dinv.optim.RED(denoiser), lambda_reg=0.1, g_param=0.1, max_iter=2)(y, physics)
    assert rec.shape == (1, 1) + GRID.shape and bool(torch.isfinite(rec).all())


def test_denoiser_rejects_bad_arguments():
    schedule = NoiseSchedule.linear(10)
    with pytest.raises(TypeError, match="nn.Module"):
        DiffusionDenoiser(lambda x, t: x, schedule)
    with pytest.raises(TypeError, match="NoiseSchedule"):
        DiffusionDenoiser(torch.nn.Identity(), None)
    with pytest.raises(ValueError, match="prediction"):
        DiffusionDenoiser(torch.nn.Identity(), schedule, prediction="score")
    with pytest.raises(ValueError, match="scale"):
        DiffusionDenoiser(torch.nn.Identity(), schedule, scale=-1.0)
    denoiser = DiffusionDenoiser(torch.nn.Identity(), schedule)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        denoiser(torch.zeros(8, 8), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        denoiser(torch.zeros(1, 1, 8, 8), -0.1)
    assert math.isclose(float(denoiser.sigma_to_t(torch.tensor(1e9))), schedule.T - 1)
