"""LegoPET (Sun & Mawlawi, ISBI 2025): wavelets, guidance, canvas, ImagePrior contract, tiny training."""

import json

import numpy as np
import pytest
import torch

from pettk.diffusion.guidance import drop_condition
from pettk.diffusion.nets import LEGOPET_TINY
from pettk.metrics import psnr
from pettk.physics import ForwardModel
from pettk.priors import ImagePrior, dataset_forward_model, reconstruct
from pettk.priors.legopet import (
    LegoPET,
    LegoPETConfig,
    cdpm_loss,
    count_parameters,
    crop_image,
    dwt_loss,
    fit_sinogram,
    haar_dwt2,
    haar_idwt2,
    normalise_image,
    normalise_sinogram,
    pad_image,
    pnpnet_loss,
    precorrect_sinogram,
    train_legopet,
    warm_start_cdpm,
)
from pettk.projector import Projector
from pettk.sim.datasets import DatasetConfig, SliceDataset, build_dataset

#: The data of the trained tests: 32² images, 2D parallel beam (32 views × 49 bins), low-count
#: full-dose prompts (3e3 per slice); 45 training subjects × 6 slices, 2 held out (12 slices).
#: v1 anatomy: at 8.3 mm pixels the v2 cortex is below the resolution, and the tiny budget is
#: tuned on this data (the mechanics, not the anatomy, are under test here).
DATA = DatasetConfig(n_subjects=48, slices_per_subject=6, image_size=32, geometry="parallel", anatomy="v1",
                     drfs=(4.0,),
                     counts_per_slice=3e3, reference_counts_factor=1.0, reference_iterations=1, reference_subsets=2,
                     split=(None, 1, 2), seed=0)
#: The tiny configuration with PnPNet trained 150 steps instead of 400 and the cDPM 600 instead of 1500
#: (the test budget; measured on the held-out slices: LegoPET 19.95 dB against MLEM's 19.23 with 150
#: PnPNet steps, 20.04 with 400, 61 s of training against 85 s; a cDPM of 300 steps: 19.35).
CONFIG = LegoPETConfig.TINY.replace(pnpnet_steps=150, cdpm_steps=600)
SINO = (32, 49)
IMAGE = (32, 32)


def _forward_model(image_size=32, geometry="parallel") -> ForwardModel:
    cfg = DatasetConfig(image_size=image_size, geometry=geometry)
    return ForwardModel(Projector(cfg.grid(), cfg.make_geometry()))


def _randomise(*nets, seed=0):
    """Perturb every weight: fresh U-Nets output zeros (zero-initialised output convs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in nets:
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return nets


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    model = LegoPET(CONFIG.replace(sampling_steps=3), IMAGE, SINO, image_max=2.0)
    _randomise(model.pnpnet, model.cdpm)
    return model


# ---------------------------------------------------------------------------------------------
# Haar wavelets and the PnPNet loss
# ---------------------------------------------------------------------------------------------
def test_haar_dwt_is_orthonormal_and_invertible():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 16, 10, generator=g, dtype=torch.float64)
    bands = haar_dwt2(x)
    assert all(b.shape == (3, 2, 8, 5) for b in bands)
    energy = sum(float((b ** 2).sum()) for b in bands)
    assert energy == pytest.approx(float((x ** 2).sum()), rel=1e-12)  # Parseval
    torch.testing.assert_close(haar_idwt2(*bands), x, rtol=0, atol=1e-12)
    # one 2×2 block by hand: [[a, b], [c, d]] = [[1, 2], [3, 4]]
    ll, lh, hl, hh = (float(b) for b in haar_dwt2(torch.tensor([[1.0, 2.0], [3.0, 4.0]])))
    assert (ll, lh, hl, hh) == (5.0, -1.0, -2.0, 0.0)
    # a constant image has no detail
    assert all(float(b.abs().max()) == 0 for b in haar_dwt2(torch.full((4, 6), 2.5))[1:])


def test_haar_rejects_bad_input():
    with pytest.raises(ValueError, match="H and W even"):
        haar_dwt2(torch.zeros(5, 4))
    with pytest.raises(TypeError, match="floating-point"):
        haar_dwt2(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="share one shape"):
        haar_idwt2(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 3))


def test_dwt_loss_sees_only_high_frequencies():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 8, 8, generator=g)
    assert float(dwt_loss(x, x)) == 0.0
    assert float(dwt_loss(x + 3.0, x)) == pytest.approx(0.0, abs=1e-6)  # a constant offset lives in LL
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0  # ±1 → |HH| = 2, LH = HL = 0
    assert float(dwt_loss(x + checker, x)) == pytest.approx(2.0, rel=1e-6)
    batch = {"sino": torch.rand(2, 1, 8, 8, generator=g), "image": x}
    net = lambda s: s  # noqa: E731
    expected = torch.mean((batch["sino"] - x) ** 2) + 0.1 * dwt_loss(batch["sino"], x)
    torch.testing.assert_close(pnpnet_loss(0.1)(net, batch, g, slice(None)), expected)
    with pytest.raises(ValueError, match="levels"):
        dwt_loss(x, x, levels=0)


# ---------------------------------------------------------------------------------------------
# Guidance and condition dropout
# ---------------------------------------------------------------------------------------------
def _noisy_inputs(model, batch=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn((batch, 1) + model.config.canvas, generator=g)
    s = torch.rand((batch, 1) + model.config.canvas, generator=g)
    t = torch.tensor([5, 60])[:batch]
    return x_t, s, t


@torch.no_grad()
def test_guidance_with_lambda_zero_is_the_conditional_prediction(untrained):
    x_t, s, t = _noisy_inputs(untrained)
    cond = untrained.condition(s)
    conditional = untrained.cdpm(x_t, t, cond=s, features=untrained.pnpnet.encoder_features(s))
    torch.testing.assert_close(untrained.guided_model(cond, 0.0)(x_t, t), conditional)
    # λ > 0: (1 + λ) ε(C) - λ ε(∅), ∅ = zero sinogram and no (zero) features
    unconditional = untrained.cdpm(x_t, t, cond=torch.zeros_like(s))
    lam = 0.7
    torch.testing.assert_close(untrained.guided_model(cond, lam)(x_t, t), (1 + lam) * conditional - lam * unconditional,
                               rtol=1e-5, atol=1e-5)
    assert float((conditional - unconditional).abs().max()) > 1e-3  # the condition matters


@torch.no_grad()
def test_dropping_the_condition_zeroes_sinogram_and_features(untrained):
    _, s, _ = _noisy_inputs(untrained)
    cond = untrained.condition(s)
    assert set(cond) == {"sino", "features"}
    assert len(cond["features"]["encoder"]) == len(CONFIG.net.channel_mults)
    # the PnPNet's response to a zero sinogram is not zero: the null features must be set explicitly
    assert float(untrained.pnpnet.encoder_features(torch.zeros_like(s))["middle"].abs().max()) > 0
    dropped, mask = drop_condition(cond, 1.0, torch.Generator().manual_seed(0))
    assert bool(mask.all())
    flat = [dropped["sino"], dropped["features"]["middle"], *dropped["features"]["encoder"]]
    assert all(float(f.abs().max()) == 0 for f in flat)
    kept, mask = drop_condition(cond, 0.0, torch.Generator().manual_seed(0))
    assert not bool(mask.any())
    torch.testing.assert_close(kept["features"]["middle"], cond["features"]["middle"])


def test_cdpm_loss_with_every_condition_dropped_is_the_unconditional_loss(untrained):
    x_t, s, _ = _noisy_inputs(untrained)
    batch = {"sino": s, "image": torch.rand_like(s) * 2 - 1}
    schedule = untrained.schedule
    loss = cdpm_loss(schedule, untrained.pnpnet, p_dp=1.0, prediction="eps")
    with torch.no_grad():
        value = loss(untrained.cdpm, batch, torch.Generator().manual_seed(4), slice(None))
        g = torch.Generator().manual_seed(4)  # the same draws: t, noise, drop decisions
        t = torch.randint(0, schedule.T, (2,), generator=g)
        noise = torch.randn(s.shape, generator=g)
        x_t = schedule.q_sample(batch["image"], t, noise)
        expected = torch.mean((untrained.cdpm(x_t, t, cond=torch.zeros_like(s)) - noise) ** 2)
    torch.testing.assert_close(value, expected)


def test_feature_guidance_adds_no_trainable_parameters():
    for preset in (LegoPETConfig.TINY, LegoPETConfig.TINY.replace(net=LEGOPET_TINY)):
        lego = LegoPET(preset, IMAGE, SINO, 1.0)
        plain = LegoPET(preset.replace(features=False), IMAGE, SINO, 1.0)
        assert plain.pnpnet is None and lego.pnpnet is not None
        assert lego.trainable_parameters() == plain.trainable_parameters() == count_parameters(lego.cdpm)
        assert count_parameters(lego.pnpnet) == 0  # frozen
    gpu = LegoPETConfig.GPU.net
    assert count_parameters(gpu.build_cdpm()) == 8_950_337  # nets/configs.py: 8.95 M


def test_warm_start_copies_the_pnpnet_backbone_and_keeps_the_noise_path():
    net = LegoPETConfig.TINY.net
    torch.manual_seed(3)
    pnpnet, cdpm = net.build_pnpnet().eval(), net.build_cdpm().eval()
    random_xt = cdpm.input_conv.weight[:, :1].clone()
    before = count_parameters(cdpm)
    assert warm_start_cdpm(cdpm, pnpnet) is cdpm and count_parameters(cdpm) == before
    torch.testing.assert_close(cdpm.input_conv.weight[:, :1], random_xt, rtol=0, atol=0)
    torch.testing.assert_close(cdpm.input_conv.weight[:, 1:], pnpnet.input_conv.weight, rtol=0, atol=0)
    source = pnpnet.state_dict()
    for key, value in cdpm.state_dict().items():
        if key in source and key != "input_conv.weight":
            assert torch.equal(value, source[key]), key
    # with the noise and time paths switched off, the warm-started cDPM is the PnPNet itself
    with torch.no_grad():
        cdpm.input_conv.weight[:, :1] = 0
        for name, param in cdpm.named_parameters():
            if ".emb_proj." in name:
                param.zero_()
        sino = torch.randn(3, 1, *net.image_size)
        out = cdpm(torch.randn(3, 1, *net.image_size), torch.tensor([0, 40, 99]), cond=sino)
        torch.testing.assert_close(out, pnpnet(sino), rtol=0, atol=0)
    with pytest.raises(ValueError, match="share a backbone"):
        warm_start_cdpm(LegoPETConfig.TINY.replace(net=LEGOPET_TINY).net.build_cdpm(), pnpnet)
    with pytest.raises(TypeError, match="two UNets"):
        warm_start_cdpm(cdpm, "pnpnet")


# ---------------------------------------------------------------------------------------------
# Canvas: padding to 256 and back, resizing, normalisation
# ---------------------------------------------------------------------------------------------
def test_shapes_through_padding_to_256_and_back():
    g = torch.Generator().manual_seed(5)
    sino = torch.rand(2, 224, 129, generator=g)  # the mmr-like 2D sinogram
    canvas = fit_sinogram(sino, (256, 256))
    assert canvas.shape == (2, 256, 256)
    torch.testing.assert_close(canvas[:, 16:240, 63:192], sino)  # pure padding, centred
    assert float(canvas.sum()) == pytest.approx(float(sino.sum()), rel=1e-6)
    image = torch.rand(2, 128, 128, generator=g) * 2 - 1
    padded = pad_image(image, (256, 256))
    assert padded.shape == (2, 256, 256) and float(padded[:, :64].max()) == -1.0  # activity 0 outside
    torch.testing.assert_close(crop_image(padded, (128, 128)), image)
    # odd sizes round-trip too (the extra pixel goes after)
    odd = torch.rand(3, 5, generator=g)
    torch.testing.assert_close(crop_image(pad_image(odd, (8, 8)), (3, 5)), odd)
    # a whole reconstruction on a 256² canvas with the mmr-like model returns the 128² grid
    net = {"image_size": (256, 256), "base_channels": 8, "channel_mults": (1, 1, 1, 1)}  # middle attention at 32²
    config = LegoPETConfig.TINY.replace(net=net, sampling_steps=2)
    model = LegoPET(config, (128, 128), (224, 129), 1.0)
    fm = _forward_model(128, "mmr-like")
    y = np.random.default_rng(0).poisson(3.0, size=(224, 129)).astype(np.float32)
    out = model.reconstruct(fm, y)
    assert isinstance(out, np.ndarray) and out.shape == (128, 128) and out.dtype == np.float32


def test_long_sinogram_axes_are_resized():
    sino = torch.full((2, 32, 49), 3.0)
    fitted = fit_sinogram(sino, (32, 32))
    assert fitted.shape == (2, 32, 32)
    torch.testing.assert_close(fitted, torch.full_like(fitted, 3.0))  # resizing keeps a constant
    short = fit_sinogram(torch.ones(20, 49), (32, 32))  # views padded, radial resized
    assert short.shape == (32, 32) and float(short[:6].abs().max()) == 0 and float(short[6:26].min()) > 0.99
    with pytest.raises(ValueError, match="does not fit the canvas"):
        pad_image(torch.zeros(40, 32), (32, 32))
    with pytest.raises(TypeError, match="canvas must be a pair"):
        fit_sinogram(sino, 32)


def test_normalisation_matches_the_dataset(tiny_data):
    raw, lego = SliceDataset(tiny_data, "test", 4.0, "none")[0], SliceDataset(tiny_data, "test", 4.0, "legopet")[0]
    torch.testing.assert_close(normalise_sinogram(raw["low"]), lego["low"])
    torch.testing.assert_close(normalise_image(raw["truth"], lego["scale"]), lego["truth"])


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def test_config_json_roundtrip_and_presets(tmp_path):
    for cfg in (LegoPETConfig.TINY, LegoPETConfig.GPU, LegoPETConfig.FULL, CONFIG):
        assert LegoPETConfig.from_json(cfg.to_json()) == cfg
        assert LegoPETConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "lego.json"
    LegoPETConfig.GPU.to_json(path)
    assert LegoPETConfig.from_json(path) == LegoPETConfig.GPU
    assert LegoPETConfig.from_json(str(path)) == LegoPETConfig.GPU
    assert LegoPETConfig.TINY.canvas == (32, 32) and LegoPETConfig.GPU.canvas == (128, 128)
    assert LegoPETConfig.FULL.canvas == (256, 256) and LegoPETConfig.FULL.sampler == "ddpm"
    assert LegoPETConfig.FULL.T == LegoPETConfig.GPU.T == 1000 and LegoPETConfig.FULL.pnpnet_lr == 3e-5
    partial = LegoPETConfig.from_dict({"preset": "gpu", "cdpm_steps": 10, "net": {"base_channels": 32}})
    assert partial.cdpm_steps == 10 and partial.net.base_channels == 32 and partial.T == 1000
    s = LegoPETConfig.TINY.schedule()  # linear 1e-4 → 0.02 rescaled by 1000 / T
    assert float(s.betas[0]) == pytest.approx(1e-3) and float(s.betas[-1]) == pytest.approx(0.2)
    assert float(LegoPETConfig.GPU.schedule().betas[-1]) == pytest.approx(0.02)


@pytest.mark.parametrize("changes, error, match", [
    ({"p_dp": 1.5}, ValueError, "p_dp"),
    ({"sampler": "euler"}, ValueError, "sampler"),
    ({"sampling_steps": 200}, ValueError, "sampling_steps"),
    ({"target": "mr"}, ValueError, "target"),
    ({"cdpm_init": "pretrained"}, ValueError, "cdpm_init"),
    ({"drf": 0.5}, ValueError, "drf"),
    ({"guidance_scale": -1.0}, ValueError, "guidance_scale"),
    ({"features": 1}, TypeError, "features"),
    ({"net": {"image_size": (31, 32)}}, ValueError, "divisible"),
])
def test_config_rejects_bad_values(changes, error, match):
    with pytest.raises(error, match=match):
        LegoPETConfig.TINY.replace(**changes).validate()


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown LegoPET configuration keys"):
        LegoPETConfig.from_dict({"cdpm_step": 3})
    with pytest.raises(ValueError, match="unknown net keys"):
        LegoPETConfig.from_dict({"net": {"width": 3}})
    with pytest.raises(ValueError, match="preset"):
        LegoPETConfig.from_dict({"preset": "huge"})


# ---------------------------------------------------------------------------------------------
# The ImagePrior contract (untrained networks suffice)
# ---------------------------------------------------------------------------------------------
def test_reconstruct_keeps_array_type_dtype_and_batch(untrained):
    fm = _forward_model()
    assert isinstance(untrained, ImagePrior)
    rng = np.random.default_rng(6)
    y = rng.poisson(5.0, size=(2, 3) + SINO)
    out = untrained.reconstruct(fm, y.astype(np.float64))
    assert isinstance(out, np.ndarray) and out.shape == (2, 3) + IMAGE and out.dtype == np.float64
    assert np.all(out >= 0) and np.all(out <= untrained.image_max + 1e-6)
    out_int = untrained(fm, y[0, 0])  # integer counts → float32
    assert out_int.dtype == np.float32 and out_int.shape == IMAGE
    t = torch.from_numpy(y[0]).float()
    out_t = untrained.reconstruct(fm, t, generator=7)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == (3,) + IMAGE
    torch.testing.assert_close(untrained.reconstruct(fm, t, generator=7), out_t)  # seeded
    torch.testing.assert_close(untrained.reconstruct(fm, t, generator=7, chunk_size=2), out_t)
    p = untrained.pnpnet_reconstruct(fm, t)
    assert p.shape == (3,) + IMAGE and bool((p >= 0).all())
    # a partial start from an image, DDPM sampling and data-consistency steps all run
    init = np.full(IMAGE, 0.5)
    assert untrained.reconstruct(fm, y[0, 0], init=init, t_start=10).shape == IMAGE
    assert untrained.reconstruct(fm, y[0, 0], sampler="ddpm", t_start=5).shape == IMAGE
    dc = untrained.reconstruct(fm, y[0, 0].astype(np.float32), dc_iterations=1, steps=2)
    assert dc.shape == IMAGE and np.all(np.isfinite(dc)) and np.all(dc >= 0)


def test_n_samples_averages_independent_samples(untrained):
    fm = _forward_model()
    y = torch.from_numpy(np.random.default_rng(8).poisson(5.0, size=SINO)).float()
    g = torch.Generator().manual_seed(11)
    first, second = untrained.reconstruct(fm, y, generator=g), untrained.reconstruct(fm, y, generator=g)
    assert not torch.allclose(first, second)
    mean = untrained.reconstruct(fm, y, generator=torch.Generator().manual_seed(11), n_samples=2)
    torch.testing.assert_close(mean, (first + second) / 2)
    with pytest.raises(ValueError, match="n_samples"):
        untrained.reconstruct(fm, y, n_samples=0)
    with pytest.raises(ValueError, match="n_samples"):
        LegoPETConfig.TINY.replace(n_samples=0).validate()


def test_reconstruct_rejects_bad_input(untrained):
    fm = _forward_model()
    y = torch.ones(SINO)
    with pytest.raises(ValueError, match="mr must be None"):
        untrained.reconstruct(fm, y, mr=torch.ones(IMAGE))
    with pytest.raises(ValueError, match="y must be non-negative"):
        untrained.reconstruct(fm, -y)
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="y contains non-finite"):
        untrained.reconstruct(fm, bad)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 32, 49\)"):
        untrained.reconstruct(fm, torch.ones(32, 48))
    with pytest.raises(TypeError, match="y must be a numpy array or a torch tensor"):
        untrained.reconstruct(fm, [[1.0]])
    with pytest.raises(TypeError, match="forward_model must be a pettk ForwardModel"):
        untrained.reconstruct("fm", y)
    with pytest.raises(ValueError, match=r"forward_model.shape_in must be \(32, 32\)"):
        untrained.reconstruct(_forward_model(64), y)
    with pytest.raises(ValueError, match="init must have shape"):
        untrained.reconstruct(fm, y, init=torch.ones(8, 8))
    with pytest.raises(ValueError, match="t_start"):
        untrained.reconstruct(fm, y, t_start=CONFIG.T)
    with pytest.raises(ValueError, match="dc_iterations"):
        untrained.reconstruct(fm, y, dc_iterations=-1)
    with pytest.raises(ValueError, match="sampler"):
        untrained.reconstruct(fm, y, sampler="euler")
    with pytest.raises(ValueError, match="guidance_scale"):
        untrained.reconstruct(fm, y, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="does not fit the canvas"):
        LegoPET(CONFIG, (40, 40), SINO, 1.0)
    with pytest.raises(ValueError, match="image_max"):
        LegoPET(CONFIG, IMAGE, SINO, 0.0)
    plain = LegoPET(CONFIG.replace(features=False), IMAGE, SINO, 1.0)
    with pytest.raises(ValueError, match="no PnPNet"):
        plain.pnpnet_reconstruct(fm, y)


def test_save_load_roundtrip(untrained, tmp_path):
    path = untrained.save(tmp_path / "lego.safetensors")
    loaded = LegoPET.load(path)
    fm = _forward_model()
    y = torch.poisson(torch.full(SINO, 4.0), generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(loaded.reconstruct(fm, y), untrained.reconstruct(fm, y))
    assert loaded.config == untrained.config and loaded.image_shape == IMAGE and loaded.sinogram_shape == SINO
    assert json.loads(path.with_suffix(".json").read_text())["config"]["method"] == "LegoPET"


# ---------------------------------------------------------------------------------------------
# Tiny training (once per module)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("legopet_data")
    build_dataset(root, DATA, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(tiny_data):
    return train_legopet(CONFIG, tiny_data)


def test_train_rejects_bad_data(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no pettk data set"):
        train_legopet(CONFIG, tmp_path)
    with pytest.raises(ValueError, match="config.drf=20.0 is not in the data set"):
        train_legopet(CONFIG.replace(drf=20.0), tiny_data)
    with pytest.raises(ValueError, match="do not fit the canvas"):
        train_legopet(CONFIG.replace(net={"image_size": (16, 16)}), tiny_data)
    with pytest.raises(TypeError, match="config must be a LegoPETConfig"):
        train_legopet({"T": 10}, tiny_data)


def _held_out(root):
    ds = SliceDataset(root, "test", 4.0, "none")
    items = [ds[i] for i in range(len(ds))]
    return ds, items, torch.stack([it["full"] for it in items])


def test_tiny_legopet_beats_fbp_and_mlem(trained, tiny_data):
    ds, items, y = _held_out(tiny_data)
    assert len(items) == 12  # 2 held-out subjects × 6 slices
    fm = dataset_forward_model(ds.manifest, items[0]["mult"], items[0]["additive"])
    samples = trained.reconstruct(fm, y)
    scores = {"legopet": [], "fbp": [], "mlem": []}
    for item, x in zip(items, samples):
        model = dataset_forward_model(ds.manifest, item["mult"], item["additive"])
        scores["legopet"].append(psnr(x, item["truth"]))
        scores["fbp"].append(psnr(reconstruct(model, item["full"], "fbp").clamp_min(0), item["truth"]))
        scores["mlem"].append(psnr(reconstruct(model, item["full"], "mlem", n_iter=10), item["truth"]))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    assert mean["legopet"] > mean["fbp"] and mean["legopet"] > mean["mlem"], mean
    assert trained.trainable_parameters() == count_parameters(CONFIG.replace(features=False).net.build_cdpm())
    assert count_parameters(trained.pnpnet) == 0
    for key in ("pnpnet_loss", "cdpm_loss"):
        curve = trained.history[key]
        assert np.mean(curve[-30:]) < np.mean(curve[:30]), key


def test_trained_data_consistency_fits_the_counts_better(trained, tiny_data):
    ds, items, y = _held_out(tiny_data)
    item = items[0]
    fm = dataset_forward_model(ds.manifest, item["mult"], item["additive"])
    plain = trained.reconstruct(fm, item["full"])
    dc = trained.reconstruct(fm, item["full"], dc_iterations=2)
    from pettk.likelihood import poisson_deviance

    assert poisson_deviance(item["full"], fm.forward(dc)) < poisson_deviance(item["full"], fm.forward(plain))


# ---------------------------------------------------------------------------------------------
# The precorrected sinogram input (pettk extension)
# ---------------------------------------------------------------------------------------------
def _scaled_model(fm: ForwardModel, c: float) -> ForwardModel:
    import copy

    out = copy.copy(fm)
    out.mult = fm.mult * c
    out.additive = fm.additive * c
    return out


def test_precorrected_input_is_the_line_integral_at_any_count_level(untrained):
    y = torch.tensor([[4.0, 2.0], [0.0, 5.0]])
    mult = torch.tensor([[2.0, 0.5], [1.0, 0.0]])
    additive = torch.tensor([[1.0, 1.0], [0.5, 1.0]])
    torch.testing.assert_close(precorrect_sinogram(y, mult, additive), torch.tensor([[1.5, 2.0], [-0.5, 0.0]]))
    torch.testing.assert_close(precorrect_sinogram(y), y)
    pre = LegoPET(CONFIG.replace(sinogram_input="precorrected"), IMAGE, SINO, 2.0, untrained.pnpnet, untrained.cdpm,
                  sinogram_scale=8.0)
    g = torch.Generator().manual_seed(3)
    mult = 0.2 + torch.rand(SINO, generator=g, dtype=torch.float64)
    background = torch.full(SINO, 0.5, dtype=torch.float64)
    fm = ForwardModel(_forward_model().projector, normalisation=mult, additive=background)
    y = torch.poisson(torch.full(SINO, 6.0, dtype=torch.float64), generator=g)
    expected = fit_sinogram(((y - 0.5) / mult / 8.0).to(torch.float32), pre.config.canvas).unsqueeze(1)
    torch.testing.assert_close(pre.sinogram_canvas(y, fm), expected)
    # a 3x longer scan (mult and additive 3x) of the same activity gives the same mean input
    torch.testing.assert_close(pre.sinogram_canvas(3 * y, _scaled_model(fm, 3.0)), expected)
    # the paper's input hides the count level instead: its own maximum
    torch.testing.assert_close(untrained.sinogram_canvas(y, fm), untrained.sinogram_canvas(3 * y))
    with pytest.raises(ValueError, match="sinogram_scale"):
        LegoPET(CONFIG, IMAGE, SINO, 1.0, sinogram_scale=0.0)
    with pytest.raises(ValueError, match="sinogram_input"):
        CONFIG.replace(sinogram_input="counts").validate()


def test_per_sample_precorrection_factors_stand_in_for_the_forward_models(untrained):
    """A batch whose samples have their own mult / additive (e.g. rebinned 3D slices) samples each as
    a forward model with those factors would: [y, 3y] with factors [m, 3m] is [y, y] with m."""
    pre = LegoPET(CONFIG.replace(sinogram_input="precorrected"), IMAGE, SINO, 2.0, untrained.pnpnet, untrained.cdpm,
                  sinogram_scale=8.0)
    g = torch.Generator().manual_seed(4)
    mult = 0.2 + torch.rand(SINO, generator=g)
    background = torch.full(SINO, 0.5)
    fm = ForwardModel(_forward_model().projector, normalisation=mult, additive=background)
    y = torch.poisson(torch.full(SINO, 6.0), generator=g)
    factors = (torch.stack([mult, 3 * mult]), torch.stack([background, 3 * background]))
    torch.testing.assert_close(pre.sinogram_canvas(torch.stack([y, 3 * y]), precorrection=factors),
                               pre.sinogram_canvas(torch.stack([y, y]), fm))
    plain = ForwardModel(_forward_model().projector)
    per_sample = pre.reconstruct(plain, torch.stack([y, 3 * y]), precorrection=factors, n_samples=1, generator=5)
    shared = pre.reconstruct(fm, torch.stack([y, y]), n_samples=1, generator=5)
    torch.testing.assert_close(per_sample, shared, rtol=1e-4, atol=1e-5 * float(shared.max()))
    # factors broadcast (one additive for the batch) and are split with the chunks
    chunked = pre.reconstruct(plain, torch.stack([y, 3 * y]), precorrection=(factors[0], background), n_samples=1,
                              generator=5, chunk_size=1)
    assert chunked.shape == (2,) + IMAGE and bool(torch.isfinite(chunked).all())
    with pytest.raises(ValueError, match="sinogram_input='precorrected'"):
        untrained.reconstruct(plain, y, precorrection=(mult, None))
    with pytest.raises(TypeError, match="pair"):
        pre.reconstruct(plain, y, precorrection=mult)
    with pytest.raises(ValueError, match="dc_iterations=0"):
        pre.reconstruct(plain, y, precorrection=(mult, None), dc_iterations=1)
    with pytest.raises(ValueError, match="does not broadcast"):
        pre.reconstruct(plain, y, precorrection=(mult[:, :3], None))
    with pytest.raises(ValueError, match="mult must be finite and >= 0"):
        pre.reconstruct(plain, y, precorrection=(-mult, None))
    with pytest.raises(ValueError, match="additive must be finite"):
        pre.reconstruct(plain, y, precorrection=(None, background * float("nan")))


def test_precorrected_training_records_its_scale_and_saves_it(tiny_data, tmp_path):
    config = CONFIG.replace(sinogram_input="precorrected", pnpnet_steps=2, cdpm_steps=2)
    model = train_legopet(config, tiny_data, tmp_path / "run")
    ds = SliceDataset(tiny_data, "train", 4.0, "none")
    peaks = [float(precorrect_sinogram(it["full"], it["mult"], it["additive"]).max()) for it in ds]
    assert model.sinogram_scale == pytest.approx(float(np.mean(peaks)), rel=1e-5)
    loaded = LegoPET.load(tmp_path / "run" / "legopet.safetensors")
    assert loaded.sinogram_scale == model.sinogram_scale and loaded.config.sinogram_input == "precorrected"
    assert LegoPET.load(model.save(tmp_path / "again.safetensors")).sinogram_scale == model.sinogram_scale
    with pytest.raises(ValueError, match="pnpnet was trained on 'precorrected' sinograms"):
        train_legopet(CONFIG, tiny_data, pnpnet=model)
