"""The image priors (PET-DDS, DDIP) on fully 3D ring data, and PET-DDS's axial coupling
(pettk.diffusion.axial, PETDDSConfig.axial_beta).

A tiny image diffusion model is trained here in seconds on the axial slices of twelve random
ellipsoid heads of the `tiny` scanner's 32 x 32 x 8 grid; both priors use it (DDIP takes it as
its pretrained network, with its own intensity normalisation set to the same training level) on
held-out volumes of the same family scanned at DRF 10 with all 16 planes (oblique ones included),
attenuation-free, 3 mm PSF, randoms and scatter."""

import numpy as np
import pytest
import torch
from _helpers import ellipsoid_head

import pettk
from pettk.diffusion.axial import axial_penalised_em_step, axial_penalty, axial_surrogate
from pettk.diffusion.image_model import TINY as IMAGE_TINY
from pettk.diffusion.image_model import merge_config, train_image_diffusion
from pettk.diffusion.posterior import penalised_em_step
from pettk.geometry import ImageGrid, SinogramLayout
from pettk.likelihood import poisson_nll
from pettk.metrics import axial_gradient_error, psnr
from pettk.physics import ForwardModel
from pettk.priors import PETDDS, PETDDSConfig
from pettk.priors.ddip import DDIP, DDIPConfig
from pettk.projector import Projector
from pettk.recon import osem
from pettk.sim import simulate_scan

DRF = 10.0
TINY = pettk.preset("tiny")          # 4 rings, 16 planes of 48 views x 49 bins; 32 x 32 x 8 at 2.5 x 2.5 x 2 mm
HELD_OUT = (20, 21, 22)
AXIAL_BETA = 0.3


def phantom(seed: int) -> np.ndarray:
    """A head-like cylinder of random ellipsoids (tests/_helpers.ellipsoid_head)."""
    return ellipsoid_head(TINY.grid, seed).astype(np.float32)


def scan(seed: int):
    """Truth, low-dose counts (float32) and the low-dose model of a held-out volume."""
    model = ForwardModel(Projector(TINY.grid, TINY.layout), psf=3.0)
    truth = phantom(seed)
    acquired = simulate_scan(truth, model, 3e5, randoms_fraction=0.1, scatter_fraction=0.1, seed=seed)
    y_low, model_low = acquired.low_dose(DRF, seed=seed + 100)
    return truth, y_low.to(torch.float32), model_low.to(dtype=torch.float32)


def scores(x, truth):
    x = np.asarray(torch.as_tensor(x), dtype=np.float64)
    return psnr(x, truth, data_range=float(truth.max())), axial_gradient_error(x, truth, truth > 0)


# ---------------------------------------------------------------------------------------------
# The axial step (no network)
# ---------------------------------------------------------------------------------------------
def _small_problem():
    g = torch.Generator().manual_seed(4)
    model = ForwardModel(Projector(TINY.grid, TINY.layout), psf=3.0).to(dtype=torch.float64)
    truth = torch.from_numpy(phantom(3)).double()
    model = model.with_background(torch.full(model.shape_out, 0.05, dtype=torch.float64), scale=0.5)
    y = torch.poisson(model.forward(truth), generator=g)
    anchor = truth * (0.7 + 0.6 * torch.rand(truth.shape, generator=g, dtype=torch.float64))  # slice-wise noise
    return model, y, anchor


def test_axial_surrogate_by_hand():
    x = torch.tensor([1.0, 3.0, 2.0, 6.0], dtype=torch.float64).reshape(1, 1, 4)
    anchor = torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=torch.float64).reshape(1, 1, 4)
    # neighbour means x/2 + (x[z-1] + x[z+1])/4 with the end slices replicated
    m = torch.tensor([1.0 / 2 + (1 + 3) / 4, 3.0 / 2 + (1 + 2) / 4, 2.0 / 2 + (3 + 6) / 4, 6.0 / 2 + (2 + 6) / 4])
    weight, centre = axial_surrogate(x, anchor, 1.0, 0.5)
    assert weight == 3.0
    torch.testing.assert_close(centre.flatten(), (1.0 * 2.0 + 2.0 * m.double()) / 3.0)
    # gamma/2 sum of squared axial differences: (2^2 + 1^2 + 4^2) * 0.5 / 2
    assert float(axial_penalty(x, 0.5)) == pytest.approx(5.25)
    # the surrogate majorises the penalty and touches it at x
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        z = 5 * torch.rand(x.shape, generator=g, dtype=torch.float64)
        below = torch.cat([x[..., :1], x[..., :-1]], dim=-1)
        above = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
        surrogate = 0.5 * sum(((2 * z - x - nb) ** 2).sum() for nb in (below, above)) * 0.5 / 2
        assert float(surrogate) >= float(axial_penalty(z, 0.5)) - 1e-12
    with pytest.raises(ValueError, match="both 0"):
        axial_surrogate(x, anchor, 0.0, 0.0)


def test_axial_step_decreases_the_penalised_objective_and_stays_non_negative():
    model, y, anchor = _small_problem()
    sens = model.sensitivity(torch.float64)
    beta, gamma = 0.02 * float(sens.mean()), 2.0 * float(sens.mean())     # a strong coupling

    def objective(x):
        return float(poisson_nll(y, model.forward(x)) + 0.5 * beta * ((x - anchor) ** 2).sum()
                     + axial_penalty(x, gamma))

    x = anchor.clamp_min(1e-3)
    values = [objective(x)]
    for _ in range(8):
        x = axial_penalised_em_step(model, y, x, anchor, beta, gamma, sens=sens)
        assert bool((x >= 0).all())
        values.append(objective(x))
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(values, values[1:])), values
    assert values[-1] < values[0]
    # gamma = 0 is penalised_em_step itself, bit for bit; the coupling smooths along z only
    plain = anchor.clamp_min(1e-3)
    for _ in range(8):
        plain = penalised_em_step(model, y, plain, anchor, beta, sens=sens)
    start = anchor.clamp_min(1e-3)
    torch.testing.assert_close(axial_penalised_em_step(model, y, start, anchor, beta, 0.0, sens=sens),
                               penalised_em_step(model, y, start, anchor, beta, sens=sens), rtol=0, atol=0)
    assert float(axial_penalty(x, 1.0)) < 0.5 * float(axial_penalty(plain, 1.0))


def test_axial_step_rejects_bad_input():
    model, y, anchor = _small_problem()
    x = anchor.clamp_min(1e-3)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        axial_penalised_em_step(model, y, x, anchor, 0.1, -1.0)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        axial_penalised_em_step(model, y, x, anchor, 0.1, float("nan"))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        axial_penalised_em_step(model, y, x, anchor, -0.1, 1.0)
    flat = ForwardModel(Projector(ImageGrid((32, 32), (2.5, 2.5)), TINY.layout_2d))
    with pytest.raises(ValueError, match="3D forward model"):
        axial_penalised_em_step(flat, y[0], x[..., 0], anchor[..., 0], 0.1, 1.0)
    with pytest.raises(ValueError, match="shape_in"):
        axial_penalised_em_step(model, y, x[..., :4], anchor[..., :4], 0.1, 1.0)
    with pytest.raises(ValueError, match="anchor must have x's shape"):
        axial_surrogate(x, anchor[..., :4], 0.1, 1.0)
    with pytest.raises(TypeError, match="torch tensor"):
        axial_penalty(x.numpy(), 1.0)


# ---------------------------------------------------------------------------------------------
# A tiny image model, PET-DDS and DDIP on 3D data
# ---------------------------------------------------------------------------------------------
def train_image_model():
    """The tiny x0-model (8 base channels, 300 steps) on 96 normalised axial slices of twelve
    training heads (seeds 1000-1011); ~25 s on 1 core. Returns ``(net, schedule, config, slices)``."""
    volumes = torch.from_numpy(np.stack([phantom(1000 + s) for s in range(12)]))          # (12, 32, 32, 8)
    slices = volumes.permute(0, 3, 1, 2).reshape(-1, 32, 32)
    slices = slices / slices.max()
    config = merge_config(IMAGE_TINY, {"unet": {"base_channels": 8},
                                       "train": {"steps": 300, "checkpoint_every": 10 ** 6}})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net, schedule, _ = train_image_diffusion(config, None, dataset=[{"x": s[None]} for s in slices],
                                                 progress=False)
    return net, schedule, config, slices


def ddip_with(prior: PETDDS) -> DDIP:
    """DDIP on PET-DDS's image model (:meth:`DDIP.from_petdds`: same network, DDIP's target_mean
    at the model's reference level), MLEM-5 start, SDEdit from t=40 of the cosine T=200 (about
    DDIP's noise level at t=100 of its linear T=1000)."""
    return DDIP.from_petdds(prior, DDIPConfig.TINY.replace(start_t=40, steps=20, init_iterations=5))


@pytest.fixture(scope="module")
def image_model():
    return train_image_model()


@pytest.fixture(scope="module")
def prior(image_model):
    net, schedule, config, slices = image_model
    return PETDDS(net, schedule, config, PETDDSConfig(), dataset=slices)


@pytest.fixture(scope="module")
def ddip(prior):
    return ddip_with(prior)


@pytest.fixture(scope="module")
def results(prior):
    """Held-out volumes: truth, data, model, 3D OSEM 3 x 4 and PET-DDS with and without the coupling."""
    out = []
    for seed in HELD_OUT:
        truth, y, model = scan(seed)
        uncoupled = prior.reconstruct(model, y)
        info = dict(prior.last_info)
        coupled_prior = prior.replace(axial_beta=AXIAL_BETA)
        coupled = coupled_prior.reconstruct(model, y)
        out.append({"truth": truth, "y": y, "model": model, "osem": osem(model, y, 3, 4), "uncoupled": uncoupled,
                    "coupled": coupled, "info": info, "coupled_info": dict(coupled_prior.last_info)})
    return out


def test_petdds_3d_beats_3d_osem_and_the_axial_coupling_lowers_the_axial_error(results):
    """Measured (PSNR dB / axial gradient error over the object, seeds 20, 21, 22): OSEM 3 x 4
    19.73/6.71, 19.36/7.69, 22.13/2.16; PET-DDS 20.90/10.03, 20.08/11.33, 22.83/3.38; with
    axial_beta 0.3 22.69/3.80, 21.32/4.13, 24.19/1.44 (1.5 dB more, the mean axial error 2.6x lower).
    Uncoupled, PET-DDS's slices are individually better than OSEM's but more inconsistent. (An
    axial post-filter of the uncoupled result does as well on this axially smooth case:
    docs/priors_3d.md.)"""
    rows = []
    for r in results:
        out = r["uncoupled"]
        assert tuple(out.shape) == (32, 32, 8) and bool((out >= 0).all()) and bool((r["coupled"] >= 0).all())
        rows.append(scores(r["osem"], r["truth"]) + scores(out, r["truth"]) + scores(r["coupled"], r["truth"]))
    rows = np.array(rows)
    print("\n(OSEM, PET-DDS, PET-DDS + axial) PSNR / axial error per volume:\n", np.round(rows, 2))
    assert (rows[:, 2] > rows[:, 0] + 0.4).all()              # PET-DDS beats 3D OSEM on every volume
    assert (rows[:, 5] < 0.7 * rows[:, 3]).all()              # the coupling lowers the axial error ...
    assert (rows[:, 4] > rows[:, 2] + 0.5).all()              # ... and raises PSNR on every volume
    assert (rows[:, 4] > rows[:, 0] + 1.0).all()


def test_axial_beta_zero_is_the_uncoupled_reconstruction(prior, results, monkeypatch):
    """axial_beta = 0 runs the previous data step (penalised_em_step alone) bit for bit; the
    coupling's absolute weight follows beta's rule; 2D models ignore axial_beta."""
    import pettk.priors.petdds.model as petdds_model

    r = results[0]
    assert r["info"]["axial_beta_abs"] == 0.0
    info = r["coupled_info"]
    assert info["axial_beta_abs"] == pytest.approx(AXIAL_BETA / prior.config.beta * info["beta_abs"], rel=1e-12)

    def previous(sub, y_sub, a, anchor, b, g, *, sens):
        assert g == 0.0
        return penalised_em_step(sub, y_sub, a, anchor, b, sens=sens)

    monkeypatch.setattr(petdds_model, "axial_penalised_em_step", previous)
    torch.testing.assert_close(prior.reconstruct(r["model"], r["y"]), r["uncoupled"], rtol=0, atol=0)
    monkeypatch.undo()
    # a 2D model: axial_beta has nothing to couple
    flat = ForwardModel(Projector(ImageGrid((32, 32), (2.5, 2.5)), TINY.layout_2d), psf=3.0)
    truth = torch.from_numpy(r["truth"][..., 4])
    y2 = torch.poisson(flat.forward(truth) * 20.0, generator=torch.Generator().manual_seed(0)).float()
    flat = flat.with_background(None, scale=20.0).to(dtype=torch.float32)
    fast = prior.replace(steps=4)
    torch.testing.assert_close(fast.replace(axial_beta=1.0).reconstruct(flat, y2), fast.reconstruct(flat, y2),
                               rtol=0, atol=0)


def test_ddip_3d_beats_3d_osem(ddip, results):
    """DDIP (one shared LoRA over the volume, Monte-Carlo slice draws) on the same data. Measured
    PSNR against OSEM 3 x 4: 22.48/19.73, 21.01/19.36, 23.31/22.13 dB."""
    before = {k: v.clone() for k, v in ddip.net.state_dict().items()}
    for r in results:
        out = ddip.reconstruct(r["model"], r["y"])
        assert tuple(out.shape) == (32, 32, 8) and bool(torch.isfinite(out).all())
        ours, theirs = scores(out, r["truth"])[0], scores(r["osem"], r["truth"])[0]
        assert ours > theirs + 0.5, (ours, theirs)
    assert ddip.last_info["scale"].shape == (8,)
    for k, v in ddip.net.state_dict().items():       # the shared pretrained network is left alone
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_image_priors_in_3d_reject_bad_input(prior, ddip, results):
    r = results[0]
    wide = ForwardModel(Projector(ImageGrid((40, 40, 8), (2.5, 2.5, 2.0)), TINY.layout))
    with pytest.raises(ValueError, match="trained on 32x32 images but the forward model's grid is 40x40"):
        prior.reconstruct(wide, r["y"])
    other = SinogramLayout(TINY.scanner, radial_trim=20)                 # a sinogram of another layout
    with pytest.raises(ValueError, match="y must have shape"):
        prior.reconstruct(ForwardModel(Projector(TINY.grid, other)), r["y"])
    with pytest.raises(ValueError, match="y must have shape"):
        ddip.reconstruct(ForwardModel(Projector(TINY.grid, other)), r["y"])
    odd = ForwardModel(Projector(ImageGrid((30, 30, 8), (2.5, 2.5, 2.0)), TINY.layout))
    with pytest.raises(ValueError, match="divisible"):
        ddip.reconstruct(odd, torch.ones(odd.shape_out))
    with pytest.raises(ValueError, match="axial_beta"):
        PETDDSConfig(axial_beta=-0.1).validate()
    with pytest.raises(ValueError, match="axial_beta"):
        prior.replace(axial_beta=-1.0)
    with pytest.raises(TypeError, match="axial_beta"):
        prior.replace(axial_beta="0.3")
    assert PETDDSConfig.from_dict({"axial_beta": 0.5}).axial_beta == 0.5
    assert PETDDSConfig.from_dict({}).axial_beta == 0.0              # configurations saved before it
