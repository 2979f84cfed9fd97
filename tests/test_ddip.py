"""DDIP for PET (Hashimoto & Gong 2025; Chung & Ye 2024): HQS closed form, configuration, the
reconstruct() contract, LoRA reset, 3D slice-by-slice adaptation, and a tiny pretrained model that
must beat its MLEM-20 start on an out-of-distribution (amyloid-like) phantom."""

import json

import numpy as np
import pytest
import torch

from pettk.diffusion.posterior import penalised_em_step
from pettk.geometry import ImageGrid, ParallelBeam2D, preset
from pettk.metrics import psnr
from pettk.physics import ForwardModel
from pettk.priors.base import ImagePrior
from pettk.priors.ddip import DDIP, DDIPConfig, DDIPImages, slab_indices, train_ddip
from pettk.projector import Projector
from pettk.recon import em_step, mlem
from pettk.recon._common import SENSITIVITY_FLOOR
from pettk.sim.phantoms import brain_phantom
from pettk.sim.scan import simulate_scan

SIZE = 32
VOXEL = 128 * 2.0863 / SIZE
#: The tiny configuration (METHODS §4.7; 500 pretraining steps).
TEST_CONFIG = DDIPConfig.TINY.replace(batch_size=8)   # examples/plot_ddip.py's recipe (conftest)


def _slice_model(size=SIZE, psf=4.5):
    grid = ImageGrid((size, size), 128 * 2.0863 / size)
    return Projector(grid, ParallelBeam2D(size, 49, grid.voxel_size_mm[0])), grid


def _scan(tracer, counts, seed=1000, z_mm=5.0, scan_seed=5):
    """A held-out brain slice (subject ``seed``), its counts and the counts model (float32)."""
    proj, grid = _slice_model()
    slab = ImageGrid((SIZE, SIZE, 1), (VOXEL, VOXEL, 2.03125), origin_mm=grid.origin_mm + (z_mm,))
    ph = brain_phantom(slab, seed=seed, tracer=tracer, lesions=2)
    act, mu, mr = ph.activity[..., 0], ph.mu[..., 0], ph.mr[..., 0]
    scan = simulate_scan(act, ForwardModel(proj, psf=4.5, mu=mu), counts, 0.1, 0.3, seed=scan_seed)
    return act, mr, scan.model.to(dtype=torch.float32), scan.prompts.to(torch.float32).numpy()


# ---------------------------------------------------------------------------------------------
# The HQS (penalised-EM) closed form, METHODS §4.4.3
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def em_problem():
    proj, _ = _slice_model(16)
    g = torch.Generator().manual_seed(3)
    mult = 0.5 + torch.rand(proj.shape_out, generator=g, dtype=torch.float64)
    model = ForwardModel(proj, normalisation=mult * 20.0, additive=torch.full(proj.shape_out, 0.3, dtype=torch.float64))
    truth = torch.rand(proj.shape_in, generator=g, dtype=torch.float64) * 2
    y = torch.poisson(model.forward(truth), generator=g)
    x = 0.2 + torch.rand(proj.shape_in, generator=g, dtype=torch.float64)
    anchor = torch.rand(proj.shape_in, generator=g, dtype=torch.float64) * 3
    sens = model.sensitivity(torch.float64)
    fov = sens > SENSITIVITY_FLOOR * float(sens.max())
    x_em = em_step(model, y, x.clone(), sens, fov, fused=False)
    return model, y, x, anchor, sens, fov, x_em


def _numeric_minimiser(s, x_em, a, beta):
    """argmin_{x>0} s x - s x_em log x + beta/2 (x - a)^2 by bisection on the derivative."""
    lo, hi = 1e-300, max(a, 0.0) + x_em + s / beta + 1.0
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if s - s * x_em / mid + beta * (mid - a) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("beta", [1e-2, 1.0, 30.0, 1e3])
def test_hqs_closed_form_solves_its_one_voxel_quadratic(em_problem, beta):
    model, y, x, anchor, sens, fov, x_em = em_problem
    out = penalised_em_step(model, y, x, anchor, beta, sens=sens)
    s, xe, a, o = (t[fov].numpy() for t in (sens, x_em, anchor, out))
    # the root of beta x^2 + (s - beta a) x - s x_em = 0 ...
    residual = beta * o ** 2 + (s - beta * a) * o - s * xe
    assert np.all(np.abs(residual) <= 1e-9 * (beta * o ** 2 + s * xe + beta * a * o + 1e-30))
    # ... equals np.roots' positive root and the bisection minimiser of the surrogate, voxel by voxel
    for k in range(0, s.size, max(1, s.size // 25)):
        roots = np.roots([beta, s[k] - beta * a[k], -s[k] * xe[k]])
        positive = roots[np.isreal(roots) & (roots.real > 0)].real
        assert positive.size == 1
        assert o[k] == pytest.approx(positive[0], rel=1e-9)
        assert o[k] == pytest.approx(_numeric_minimiser(s[k], xe[k], a[k], beta), rel=1e-9)
    assert np.all(o >= 0)


def test_hqs_limits_mlem_and_anchor(em_problem):
    model, y, x, anchor, sens, fov, x_em = em_problem
    small = penalised_em_step(model, y, x, anchor, 1e-12, sens=sens)
    torch.testing.assert_close(small, x_em, rtol=1e-8, atol=1e-12)           # beta -> 0: the MLEM update
    zero = penalised_em_step(model, y, x, anchor, 0.0, sens=sens)
    torch.testing.assert_close(zero, x_em, rtol=0, atol=0)
    errors = [float((penalised_em_step(model, y, x, anchor, b, sens=sens) - anchor)[fov].abs().max())
              for b in (1e8, 1e10, 1e16)]
    assert errors[1] < errors[0] / 50 and errors[2] < 1e-9   # beta -> inf: the anchor, error ~ 1/beta
    # in between, each voxel lies between its MLEM update and its anchor
    mid = penalised_em_step(model, y, x, anchor, 30.0, sens=sens)[fov]
    lo, hi = torch.minimum(x_em[fov], anchor[fov]), torch.maximum(x_em[fov], anchor[fov])
    assert bool(((mid >= lo * (1 - 1e-9)) & (mid <= hi * (1 + 1e-9))).all())


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["TINY", "GPU", "FULL"])
def test_config_presets_roundtrip_json(name, tmp_path):
    cfg = getattr(DDIPConfig, name)
    text = cfg.to_json(tmp_path / "ddip.json")
    assert json.loads(text)["net"]["in_channels"] == cfg.net.in_channels
    assert DDIPConfig.from_json(tmp_path / "ddip.json") == cfg
    assert DDIPConfig.from_json(text) == cfg
    assert DDIPConfig.from_json(name.lower()) is cfg
    assert DDIPConfig.from_dict(json.loads(text)) == cfg


def test_config_presets_follow_methods():
    tiny, gpu, full = DDIPConfig.TINY, DDIPConfig.GPU, DDIPConfig.FULL
    assert (tiny.slices, tiny.conditional, tiny.net.image_size) == (1, True, (32, 32))
    assert (tiny.start_t, tiny.steps, tiny.adapt_steps, tiny.lora_rank, tiny.em_iterations) == (100, 20, 1, 2, 2)
    for cfg in (gpu, full):
        assert (cfg.slices, cfg.net.cond_channels, cfg.start_t, cfg.adapt_steps) == (3, 3, 200, 2)
    assert (full.steps, full.lora_rank, full.em_iterations, full.adapt_lr, full.beta, full.eta) == \
        (201, 4, 5, 5e-4, 0.01, 0.85)
    assert full.net.out_channels == 6 and full.net.base_channels == 128


@pytest.mark.parametrize("changes, match", [
    ({"start_t": 1000}, "start_t"), ({"steps": 500}, "steps"), ({"beta": -1.0}, "beta"),
    ({"eta": 1.5}, "eta"), ({"loss": "l1"}, "loss"), ({"prediction": "v"}, "prediction"),
    ({"lora_rank": 0}, "lora_rank"), ({"target_mean": 1.5}, "target_mean"),
    ({"net": DDIPConfig.TINY.net.replace(in_channels=2, cond_channels=2)}, "in_channels"),
    ({"net": DDIPConfig.TINY.net.replace(cond_channels=3)}, "cond_channels"),
])
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        DDIPConfig.TINY.replace(**changes).validate()


def test_config_rejects_bad_types_and_unknown_fields():
    with pytest.raises(TypeError, match="adapt_steps"):
        DDIPConfig.TINY.replace(adapt_steps=1.5).validate()
    with pytest.raises(ValueError, match="unknown"):
        DDIPConfig.from_dict({"nonsense": 1})
    with pytest.raises(TypeError):
        DDIPConfig.from_json(3)


def test_config_partial_net_overrides_the_tiny_network():
    cfg = DDIPConfig.from_dict({"net": {"image_size": [64, 64]}, "train_steps": 7})
    assert cfg.net == DDIPConfig.TINY.net.replace(image_size=(64, 64))
    assert cfg.conditional and cfg.train_steps == 7
    with pytest.raises(ValueError, match="unknown DDIP net fields"):
        DDIPConfig.from_dict({"net": {"widht": 3}})


def test_slab_indices_replicate_edges():
    assert slab_indices(4, 3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert slab_indices(2, 1).tolist() == [[0], [1]]


# ---------------------------------------------------------------------------------------------
# The reconstruct() contract on an untrained network (fast)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    net = DDIPConfig.TINY.net.build()
    with torch.no_grad():  # a fresh U-Net outputs zeros; give it a non-trivial output layer
        net.out_conv.weight.normal_(0, 0.02)
    return DDIP(DDIPConfig.TINY.replace(steps=4, start_t=20), net)


@pytest.fixture(scope="module")
def fdg_scan():
    return _scan("fdg", 3e4)


def test_is_an_image_prior_and_keeps_array_types(untrained, fdg_scan):
    act, mr, model, y = fdg_scan
    assert isinstance(untrained, ImagePrior)
    out = untrained.reconstruct(model, y, mr=mr)
    assert isinstance(out, np.ndarray) and out.shape == act.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0
    out_t = untrained(model, torch.from_numpy(y), mr=torch.from_numpy(mr))
    assert isinstance(out_t, torch.Tensor) and tuple(out_t.shape) == act.shape
    np.testing.assert_allclose(out_t.numpy(), out, rtol=1e-5, atol=1e-6)  # same seed, same image


def test_reconstruct_rejects_bad_input(untrained, fdg_scan):
    act, mr, model, y = fdg_scan
    with pytest.raises(TypeError, match="forward_model"):
        untrained.reconstruct("model", y, mr=mr)
    with pytest.raises(TypeError, match="y must be"):
        untrained.reconstruct(model, y.tolist(), mr=mr)
    with pytest.raises(ValueError, match="y must have shape"):
        untrained.reconstruct(model, y[:-1], mr=mr)
    with pytest.raises(ValueError, match=">= 0"):
        untrained.reconstruct(model, -y, mr=mr)
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        untrained.reconstruct(model, bad, mr=mr)
    with pytest.raises(ValueError, match="MR-conditioned"):
        untrained.reconstruct(model, y)
    with pytest.raises(ValueError, match="mr must have shape"):
        untrained.reconstruct(model, y, mr=mr[:-1])
    with pytest.raises(ValueError, match="init must be >= 0"):
        untrained.reconstruct(model, y, mr=mr, init=-np.ones_like(mr))
    with pytest.raises(TypeError, match="adapt"):
        untrained.reconstruct(model, y, mr=mr, adapt="yes")
    odd_proj, _ = _slice_model(30)
    with pytest.raises(ValueError, match="divisible"):
        untrained.reconstruct(ForwardModel(odd_proj), np.ones(odd_proj.shape_out, np.float32),
                              mr=np.ones(odd_proj.shape_in))
    with pytest.raises(TypeError, match="UNet"):
        DDIP(DDIPConfig.TINY, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cannot be replaced"):
        untrained.replace(T=500)


def test_3d_volume_slice_by_slice_with_one_shared_lora():
    """A 3D model (tiny scanner, 8 planes): 2D and 2.5D networks, Monte-Carlo slices, shapes."""
    p = preset("tiny")
    proj = Projector(p.grid, p.layout)
    g = torch.Generator().manual_seed(0)
    truth = torch.zeros(p.grid.shape)
    truth[8:24, 6:26, 1:7] = 1.0 + torch.rand((16, 20, 6), generator=g)
    model = ForwardModel(proj)
    y = torch.poisson(model.forward(truth) * 5.0, generator=g) / 1.0
    model = model.with_background(None, scale=5.0)
    mr = (truth > 0).float() * 0.8 + 0.1
    for cfg in (DDIPConfig.TINY, DDIPConfig.TINY.replace(net=DDIPConfig.TINY.net.replace(in_channels=3,
                                                                                         out_channels=3,
                                                                                         cond_channels=3))):
        torch.manual_seed(1)
        net = cfg.net.build()
        with torch.no_grad():
            net.out_conv.weight.normal_(0, 0.02)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        ddip = DDIP(cfg.replace(steps=3, start_t=20, mc_slices=3, init_iterations=3), net)
        out = ddip.reconstruct(model, y, mr=mr)
        assert tuple(out.shape) == tuple(p.grid.shape) and bool(torch.isfinite(out).all())
        assert len(ddip.last_info["losses"]) == 3 and ddip.last_info["scale"].shape == (p.grid.shape[2],)
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_training_slabs_and_dataset_folder(tmp_path):
    from pettk.sim.datasets import DatasetConfig, build_dataset

    cfg = DDIPConfig.TINY.replace(net=DDIPConfig.TINY.net.replace(in_channels=3, out_channels=6, cond_channels=3,
                                                                  image_size=(16, 16)),
                                  train_steps=2, batch_size=2, augment=False)
    root = tmp_path / "data"
    build_dataset(root, DatasetConfig(n_subjects=2, slices_per_subject=3, image_size=16, geometry="parallel",
                                      drfs=(4.0,), counts_per_slice=1e4, reference_counts_factor=1.0,
                                      reference_iterations=1, reference_subsets=1, slice_range_mm=4.0625,
                                      split=(None, 0, 0), lesions=0), progress=False)
    data = DDIPImages.from_dataset(root, cfg)
    assert len(data) == 6 and tuple(data[0]["x"].shape) == (3, 16, 16) and tuple(data[0]["cond"].shape) == (3, 16, 16)
    centre = data.x[:, 1]
    mask = data.cond[:, 1] > cfg.mask_threshold * data.cond[:, 1].amax(dim=(1, 2), keepdim=True)
    means = torch.stack([c[m].mean() for c, m in zip(centre, mask)])
    torch.testing.assert_close(means, torch.full_like(means, cfg.target_mean), rtol=1e-5, atol=0)
    prior = train_ddip(cfg, root, out_dir=tmp_path / "model")
    assert (tmp_path / "model" / "ddip.safetensors").is_file() and len(prior.history["loss"]) == 2
    loaded = DDIP.load(tmp_path / "model" / "ddip.safetensors")
    assert loaded.config == cfg
    with pytest.raises(ValueError, match="in_channels"):
        train_ddip(DDIPConfig.TINY, data)
    with pytest.raises(TypeError, match="dataset_root"):
        train_ddip(cfg, 42)


# ---------------------------------------------------------------------------------------------
# A tiny pretrained model (FDG-like) on an out-of-distribution (amyloid-like) slice
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(ddip_tiny_pretrained):
    """TEST_CONFIG pretrained on 16 FDG-like subjects x 5 slices (seed 0): the session's model, trained
    once by examples/plot_ddip.py's recipe (conftest.ddip_tiny_pretrained) for this file and the example."""
    prior, _ = ddip_tiny_pretrained
    assert prior.config == TEST_CONFIG and len(prior.history["loss"]) == TEST_CONFIG.train_steps
    return prior


@pytest.fixture(scope="module")
def ood_scan():
    return _scan("amyloid", 3e4)


@pytest.fixture(scope="module")
def ood_results(pretrained, ood_scan):
    act, mr, model, y = ood_scan
    x20 = mlem(model, y, 20)
    before = {k: v.clone() for k, v in pretrained.net.state_dict().items()}
    on = pretrained.reconstruct(model, y, mr=mr, init=x20, seed=1)
    trainable = pretrained.last_info["trainable"]
    on_again = pretrained.reconstruct(model, y, mr=mr, init=x20, seed=1)
    off = pretrained.reconstruct(model, y, mr=mr, init=x20, seed=1, adapt=False)
    return {"act": act, "mlem20": x20, "on": on, "on_again": on_again, "off": off, "before": before,
            "trainable": trainable}


def test_ddip_beats_its_mlem20_start_out_of_distribution(ood_results):
    act = ood_results["act"]
    p_mlem, p_on = psnr(ood_results["mlem20"], act), psnr(ood_results["on"], act)
    assert p_on > p_mlem + 0.3, (p_on, p_mlem)


def test_adaptation_beats_no_adaptation(ood_results):
    act = ood_results["act"]
    p_on, p_off = psnr(ood_results["on"], act), psnr(ood_results["off"], act)
    assert p_on > p_off + 1.0, (p_on, p_off)


def test_a_call_leaves_the_pretrained_weights_alone(pretrained, ood_results):
    for k, v in pretrained.net.state_dict().items():
        torch.testing.assert_close(v, ood_results["before"][k], rtol=0, atol=0)
    np.testing.assert_array_equal(ood_results["on"], ood_results["on_again"])  # LoRA reset per call
    total = sum(p.numel() for p in pretrained.net.parameters())
    assert 0 < ood_results["trainable"] < 0.25 * total   # LoRA + biases only
    assert pretrained.last_info["trainable"] == 0         # the last call had adapt=False


def test_sinogram_domain_loss_runs_through_the_projector(pretrained, ood_scan, ood_results):
    act, mr, model, y = ood_scan
    ddip = pretrained.replace(loss="sinogram", steps=5)
    out = ddip.reconstruct(model, y, mr=mr, init=ood_results["mlem20"], seed=1)
    assert out.shape == act.shape and np.all(np.isfinite(out))
    losses = ddip.last_info["losses"]
    assert len(losses) == 5 and all(np.isfinite(losses))


def test_save_load_roundtrip(pretrained, ood_scan, tmp_path):
    act, mr, model, y = ood_scan
    pretrained.save(tmp_path / "ddip.safetensors")
    loaded = DDIP.load(tmp_path / "ddip.safetensors")
    assert loaded.config == pretrained.config and loaded.history["loss"] == pretrained.history["loss"]
    quick = dict(steps=3)
    a = pretrained.replace(**quick).reconstruct(model, y, mr=mr, seed=2)
    b = loaded.replace(**quick).reconstruct(model, y, mr=mr, seed=2)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not a DDIP checkpoint"):
        from pettk.io.checkpoint import save_checkpoint

        save_checkpoint(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"method": "RED"})
        DDIP.load(tmp_path / "other.safetensors")
