"""DREAM (Huang et al., arXiv 2503.08339): masks, blocks, averaging, latent diffusion, restore(), tiny training."""

import json

import numpy as np
import pytest
import torch

from pettk.metrics import nrmse, psnr, ssim
from pettk.priors import SinogramRestorer, dataset_forward_model, reconstruct
from pettk.priors.dream import (
    DREAM,
    DREAMConfig,
    _blocks,
    _Clock,
    block_masks,
    count_parameters,
    crop_plane,
    curriculum_stage,
    latent_reverse,
    latent_schedule,
    make_block,
    mask_aware_average,
    normalise_dream,
    pad_plane,
    plane_shape,
    random_block_masks,
    random_crop,
    train_dream,
)
from pettk.sim.datasets import SliceDataset

DRF = 20.0
SHAPE = (32, 49)  # the parallel-beam sinogram of a 32² image: 32 views × 49 radial bins
#: A reduced tiny configuration: 32×49 sinograms padded to a 32×56 plane, 8-px cells, N = 3,
#: curriculum crops 32 → 56 (the whole plane), all three training stages.
CONFIG = DREAMConfig.TINY.replace(pad_mode="multiple", crop_sizes=(32, 56), batch_sizes=(4, 4), curriculum=(0.5, 0.5),
                                  s1_steps=200, s2a_steps=50, s2b_steps=100, lr=2e-3, drf=DRF, seed=0)
MLEM_ITERATIONS = 20


# ---------------------------------------------------------------------------------------------
# Masks, blocks, planes, curriculum
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, cell, expected_draws", [((64, 64), 8, 6), ((256, 256), 16, 26), ((32, 56), 8, 3)])
def test_mask_statistics(shape, cell, expected_draws):
    n = 400 if shape[0] > 100 else 2000
    masks = random_block_masks(n, shape, cell, 0.1, seed=0)
    assert masks.shape == (n,) + shape and masks.dtype == torch.float32
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    gh, gw = shape[0] // cell, shape[1] // cell
    cells = masks.reshape(n, gh, cell, gw, cell)
    # every cell is all-visible or all-hidden: the holes are aligned to the cell grid
    assert bool((cells.amax(dim=(2, 4)) == cells.amin(dim=(2, 4))).all())
    hidden_cells = (1 - cells[:, :, 0, :, 0]).sum(dim=(1, 2))
    assert int(hidden_cells.max()) <= expected_draws  # drawn with replacement: at most that many distinct cells
    hidden = 1 - masks.mean(dim=(1, 2))
    assert float(hidden.max()) <= expected_draws / (gh * gw) + 1e-6
    assert float(hidden.max()) <= 0.11  # ≈ 10 % of the area at most
    n_cells = gh * gw
    expected_mean = 1 - (1 - 1 / n_cells) ** expected_draws  # uniform draws with replacement
    assert float(hidden.mean()) == pytest.approx(expected_mean, abs=0.004)


def test_masks_partial_cells_and_determinism():
    a = random_block_masks(50, (30, 45), 8, 0.2, seed=3)
    b = random_block_masks(50, (30, 45), 8, 0.2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == (50, 30, 45)
    assert not torch.equal(a, random_block_masks(50, (30, 45), 8, 0.2, seed=4))
    assert bool((random_block_masks(3, (16, 16), 8, 0.0, seed=0) == 1).all())
    with pytest.raises(ValueError, match="fraction must lie"):
        random_block_masks(1, (16, 16), 8, 1.5)
    with pytest.raises(ValueError, match="cell_size must be"):
        random_block_masks(1, (16, 16), 0)


def test_block_layout_and_same_mask_for_low_and_full():
    g = torch.Generator().manual_seed(0)
    lq, gt = torch.rand(4, 32, 56, generator=g) + 0.1, torch.rand(4, 32, 56, generator=g) + 0.1
    masks = block_masks(4, 3, (32, 56), 8, 0.1, generator=g)
    assert masks.shape == (4, 3, 32, 56) and bool((masks[:, 2] == 1).all())
    assert bool((masks[:, :2] == 0).any())
    block_lq, block_gt = make_block(lq, masks), make_block(gt, masks)
    torch.testing.assert_close(block_lq[:, 2], lq)
    torch.testing.assert_close(block_lq[:, :2], masks[:, :2] * lq[:, None])
    assert torch.equal(block_lq == 0, block_gt == 0)
    assert not torch.equal(masks[:, 0], masks[:, 1])  # a fresh mask per channel
    # N = 1 (the "no masks" ablation): the block is the sinogram itself
    one = block_masks(4, 1, (32, 56), 8, 0.1, generator=g)
    assert one.shape == (4, 1, 32, 56) and bool((one == 1).all())


@pytest.mark.parametrize("mask_mode", ["fixed", "scaled"])
def test_training_blocks_share_masks_and_follow_curriculum(mask_mode):
    config = CONFIG.replace(mask_mode=mask_mode, crop_sizes=(16, 32), batch_sizes=(4, 2))
    g = torch.Generator().manual_seed(1)
    batch = {"low": torch.rand(4, 32, 56, generator=g) + 0.1, "full": torch.rand(4, 32, 56, generator=g) + 0.1}
    clock = _Clock(total=10)
    lq, gt, sub = _blocks(config, clock, batch, g, slice(0, 4))
    assert lq.shape == gt.shape == (4, 3, 16, 16) and sub == slice(0, 4)
    assert torch.equal(lq == 0, gt == 0) and bool((lq[:, :2] == 0).any()) and bool((lq[:, 2] > 0).all())
    clock.offset = 5  # second curriculum stage: crop 32 (→ 32×32), batch 2
    lq, gt, sub = _blocks(config, clock, batch, g, slice(0, 4))
    assert lq.shape == (2, 3, 32, 32) and sub == slice(0, 2)


def test_curriculum_and_crops():
    sizes, batches, fractions = (64, 128, 192, 256), (8, 4, 2, 2), (0.3, 0.25, 0.25, 0.2)
    total = 400_000
    assert curriculum_stage(0, total, sizes, batches, fractions) == (64, 8)
    assert curriculum_stage(119_999, total, sizes, batches, fractions) == (64, 8)
    assert curriculum_stage(120_000, total, sizes, batches, fractions) == (128, 4)
    assert curriculum_stage(220_000, total, sizes, batches, fractions) == (192, 2)
    assert curriculum_stage(399_999, total, sizes, batches, fractions) == (256, 2)
    g = torch.Generator().manual_seed(0)
    a = torch.arange(2 * 3 * 20 * 30, dtype=torch.float32).reshape(2, 3, 20, 30)
    ca, cb = random_crop([a, a + 1], 8, g)
    assert ca.shape == (2, 3, 8, 8) and torch.equal(cb, ca + 1)
    assert random_crop([a], 64, g)[0] is a  # larger than the plane: the whole plane


def test_planes_and_normalisation():
    assert plane_shape((256, 192)) == (256, 256)  # the paper: 192 padded to 256
    assert plane_shape(SHAPE) == (56, 56) and plane_shape(SHAPE, "multiple") == (32, 56)
    x = torch.rand(2, 32, 49)
    padded = pad_plane(x, (32, 56))
    assert padded.shape == (2, 32, 56) and float(padded[..., :3].abs().sum()) == 0  # 3 left, 4 right
    assert float(padded[..., -4:].abs().sum()) == 0
    torch.testing.assert_close(crop_plane(padded, SHAPE), x)
    torch.testing.assert_close(crop_plane(pad_plane(x, (56, 56)), SHAPE), x)
    s, v = normalise_dream(x * 7)
    assert float(s.amax()) == pytest.approx(1.0) and v.shape == (2, 1, 1)


def test_normalisation_matches_dataset(tiny_data):
    raw, dream = SliceDataset(tiny_data, "test", DRF, "none")[0], SliceDataset(tiny_data, "test", DRF, "dream")[0]
    s, v = normalise_dream(raw["low"][None])
    torch.testing.assert_close(s[0], dream["low"])
    torch.testing.assert_close(raw["full"] / v[0], dream["full"])
    assert float(v) == pytest.approx(dream["scale"])


# ---------------------------------------------------------------------------------------------
# Mask-aware averaging
# ---------------------------------------------------------------------------------------------
def test_mask_aware_average_exact_where_nothing_is_hidden():
    g = torch.Generator().manual_seed(2)
    out = torch.rand(3, 3, 32, 56, generator=g, dtype=torch.float64)
    masks = block_masks(3, 3, (32, 56), 8, 0.3, generator=g, dtype=torch.float64)
    avg = mask_aware_average(out, masks)
    visible = masks.amin(dim=1) == 1
    assert bool(visible.any()) and bool((~visible).any())
    assert torch.equal(avg[visible], out.mean(dim=1)[visible])  # the plain mean, bit for bit
    # where a channel hides the pixel, it does not count
    expected = (masks * out).sum(1) / masks.sum(1)
    torch.testing.assert_close(avg, expected)
    only_last = (masks[:, 0] == 0) & (masks[:, 1] == 0)
    if bool(only_last.any()):
        torch.testing.assert_close(avg[only_last], out[:, 2][only_last])
    # weights (tiled over K = 2 draws concatenated along the channels)
    w = (1.0, 1.0, 2.0)
    avg2 = mask_aware_average(torch.cat([out, out], 1), torch.cat([masks, masks], 1), w)
    wm = masks * torch.tensor(w, dtype=torch.float64).reshape(1, 3, 1, 1)
    torch.testing.assert_close(avg2, (wm * out).sum(1) / wm.sum(1))
    with pytest.raises(ValueError, match="hidden from every channel"):
        mask_aware_average(out, torch.zeros_like(out))
    with pytest.raises(ValueError, match="weights must have"):
        mask_aware_average(out, masks, (1.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Latent diffusion
# ---------------------------------------------------------------------------------------------
def test_latent_schedule_values():
    s = latent_schedule(4, 0.1, 0.99)
    np.testing.assert_allclose(s.betas.numpy(), [0.100, 0.294, 0.591, 0.990], atol=6e-4)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), [0.900, 0.635, 0.260, 0.0026], atol=6e-4)
    np.testing.assert_allclose(np.diff(np.sqrt(s.betas.numpy())), (np.sqrt(0.99) - np.sqrt(0.1)) / 3, rtol=1e-12)


def test_latent_reverse_is_deterministic_and_ends_at_x0():
    s = latent_schedule()
    g = torch.Generator().manual_seed(0)
    z0, c = torch.randn(5, 16, generator=g, dtype=torch.float64), torch.randn(5, 16, generator=g, dtype=torch.float64)
    z_T = torch.randn(5, 16, generator=g, dtype=torch.float64)
    seen, inputs = [], []

    def oracle(z_t, t, cond):
        seen.append(int(t[0]))
        inputs.append(z_t)
        assert cond is c
        return z0

    out = latent_reverse(oracle, z_T, c, s)
    assert seen == [3, 2, 1, 0]
    torch.testing.assert_close(out, z0, atol=1e-12, rtol=0)  # the last step returns ẑ₀ exactly
    # z_2 is the posterior mean μ̃_3(ẑ₀, z_3), no noise added
    a, ap, b = s.alphas_cumprod, s.alphas_cumprod_prev, s.betas
    z2 = b[3] * ap[3].sqrt() / (1 - a[3]) * z0 + (1 - ap[3]) * (1 - b[3]).sqrt() / (1 - a[3]) * z_T
    torch.testing.assert_close(inputs[1], z2)
    torch.testing.assert_close(latent_reverse(oracle, z_T, c, s), out)  # deterministic


# ---------------------------------------------------------------------------------------------
# Configurations and parameter counts
# ---------------------------------------------------------------------------------------------
def test_full_parameter_counts():
    counts = count_parameters(DREAMConfig.FULL)
    assert counts["s1"] == pytest.approx(26.74e6, rel=0.02) and counts["s2"] == pytest.approx(26.91e6, rel=0.02)
    assert counts["cpen_s1"] == pytest.approx(1.07e6, rel=0.02) and counts["denoiser"] == pytest.approx(0.197e6,
                                                                                                        rel=0.02)
    tiny = count_parameters(DREAMConfig.TINY)
    assert tiny["s1"] == pytest.approx(0.24e6, rel=0.05) and tiny["s2"] == pytest.approx(0.24e6, rel=0.05)


def test_config_roundtrip_json_and_validation(tmp_path):
    for cfg in (DREAMConfig.TINY, DREAMConfig.GPU, DREAMConfig.FULL, CONFIG, CONFIG.replace(n_channels=1)):
        assert DREAMConfig.from_dict(cfg.to_dict()) == cfg
        json.dumps(cfg.to_dict())
    assert DREAMConfig.FULL.net.dim == 48 and DREAMConfig.FULL.crop_sizes == (64, 128, 192, 256)
    assert DREAMConfig.TINY.crop_sizes == (32, 64) and DREAMConfig.TINY.s1_steps == 300
    path = tmp_path / "dream.json"
    path.write_text(json.dumps({"base": "gpu", "s1_steps": 10, "net": {"dim": 16}, "n_channels": 1}))
    cfg = DREAMConfig.from_json(path)
    assert cfg.s1_steps == 10 and cfg.net.dim == 16 and cfg.net.in_channels == 1 and cfg.cell_size == 16
    assert DREAMConfig.from_json(CONFIG.save_json(tmp_path / "c.json")) == CONFIG
    with pytest.raises(ValueError, match="unknown DREAM configuration keys"):
        DREAMConfig.from_dict({"s1_step": 3})
    with pytest.raises(ValueError, match="must equal n_channels"):
        DREAMConfig(n_channels=1).validate()
    with pytest.raises(ValueError, match="multiples of 8"):
        CONFIG.replace(crop_sizes=(20, 56)).validate()
    with pytest.raises(ValueError, match="sum to 1"):
        CONFIG.replace(curriculum=(0.5, 0.2)).validate()


def test_paper_learning_rate_rules():
    tc = DREAMConfig.FULL.train_config("s1")
    assert tc.lr_factor(0) == pytest.approx(1.0) and tc.lr_factor(119_999) == pytest.approx(1.425, rel=1e-3)
    assert tc.lr_factor(120_000) == pytest.approx(1.0) and tc.lr_factor(399_999) == pytest.approx(0.005, abs=1e-4)
    a, b = DREAMConfig.FULL.train_config("s2a"), DREAMConfig.FULL.train_config("s2b")
    assert a.lr_factor(59_999) == 1.0 and a.lr_factor(60_000) == pytest.approx(0.1)
    assert b.lr_factor(79_999) == 1.0 and b.lr_factor(80_000) == 0.5 and b.lr_factor(299_999) == 0.125
    assert tuple(b.betas) == (0.9, 0.99) and tuple(tc.betas) == (0.9, 0.999)


# ---------------------------------------------------------------------------------------------
# restore() contract (untrained networks suffice)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return DREAM(CONFIG, SHAPE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_restore_keeps_shape_dtype_device(untrained, dtype, batch):
    y = torch.poisson(torch.full(batch + SHAPE, 2.0, dtype=dtype), generator=torch.Generator().manual_seed(3))
    out = untrained.restore(y, DRF)
    assert isinstance(out, torch.Tensor) and out.shape == y.shape and out.dtype == dtype
    assert out.device == y.device and bool((out >= 0).all()) and bool(torch.isfinite(out).all())
    assert isinstance(untrained, SinogramRestorer)


def test_restore_numpy_seeds_and_options(untrained):
    y = np.random.default_rng(0).poisson(2.0, size=(2,) + SHAPE)
    out = untrained.restore(y.astype(np.float64), DRF)
    assert isinstance(out, np.ndarray) and out.shape == y.shape and out.dtype == np.float64
    assert untrained.restore(y, DRF).dtype == np.float32  # integer counts are accepted
    np.testing.assert_array_equal(untrained.restore(y, DRF, seed=5), untrained.restore(y, DRF, seed=5))
    assert not np.array_equal(untrained.restore(y, DRF, seed=5), untrained.restore(y, DRF, seed=6))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    np.testing.assert_array_equal(untrained.restore(y, DRF, generator=g1), untrained.restore(y, DRF, generator=g2))
    assert not np.array_equal(untrained.restore(y, DRF, use_prior=False), out.astype(np.float32))
    assert untrained.restore(y, DRF, n_draws=3).shape == y.shape
    rescaled = untrained.restore(y, DRF, rescale_counts=True)
    np.testing.assert_allclose(rescaled.sum(axis=(1, 2)), DRF * y.sum(axis=(1, 2)), rtol=1e-4)
    zeros = untrained.restore(np.zeros(SHAPE), DRF)
    assert np.all(np.isfinite(zeros)) and float(np.abs(zeros).max()) < 1e-6


def test_restore_rejects_bad_input(untrained):
    y = torch.ones(SHAPE)
    with pytest.raises(ValueError, match="y_low must be non-negative"):
        untrained.restore(-y, DRF)
    with pytest.raises(ValueError, match=r"drf=4\.0 does not match .* DRF 20"):
        untrained.restore(y, 4.0)
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="y_low contains non-finite"):
        untrained.restore(bad, DRF)
    with pytest.raises(ValueError, match=r"y_low must have shape \(\.\.\., 32, 49\)"):
        untrained.restore(torch.ones(32, 48), DRF)
    with pytest.raises(ValueError, match="y_low must have shape"):
        untrained.restore(torch.ones(49), DRF)
    with pytest.raises(TypeError, match="y_low must be a numpy array or a torch tensor"):
        untrained.restore([[1.0]], DRF)
    with pytest.raises(TypeError, match="drf must be a number"):
        untrained.restore(y, "20")
    with pytest.raises(ValueError, match="n_draws must be"):
        untrained.restore(y, DRF, n_draws=0)
    with pytest.raises(ValueError, match="channel_weights must have"):
        untrained.restore(y, DRF, weights=(1.0, 1.0))


def test_save_load_roundtrip(untrained, tmp_path):
    path = untrained.save(tmp_path / "dream.safetensors")
    loaded = DREAM.load(path)
    y = torch.poisson(torch.full(SHAPE, 3.0), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(loaded.restore(y, DRF), untrained.restore(y, DRF))
    assert loaded.config == untrained.config and loaded.sinogram_shape == SHAPE
    assert DREAMConfig.from_json(path.with_suffix(".json")) == untrained.config
    with pytest.raises(ValueError, match="not a DREAM checkpoint"):
        from pettk.io import save_checkpoint

        DREAM.load(save_checkpoint(tmp_path / "x.safetensors", {"a": torch.zeros(1)}, {"method": "RED"}))


# ---------------------------------------------------------------------------------------------
# Tiny training (trained once per module) and the ablations
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(restorer_data):
    """8 subjects x 3 slices of 32² parallel-beam data at DRF 20 (conftest.restorer_data, shared with
    test_red/test_dream, which build the same set)."""
    assert DRF == 20.0
    return restorer_data


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    return train_dream(CONFIG, tiny_data, out_dir=tmp_path_factory.mktemp("dream_model"))


def _test_split(root):
    ds = SliceDataset(root, "test", DRF, "none")
    items = [ds[i] for i in range(len(ds))]
    y_low = torch.stack([it["low"] for it in items]) / DRF  # raw low-dose counts
    return ds, items, y_low, torch.stack([it["full"] for it in items])


def _mean_nrmse(x, ref):
    return float(np.mean([nrmse(x[i], ref[i]) for i in range(len(ref))]))


def test_tiny_dream_restores_better_than_low_dose(trained, tiny_data):
    _, _, y_low, full = _test_split(tiny_data)
    assert len(full) == 6  # 2 held-out subjects × 3 slices
    restored = trained.restore(y_low, DRF)
    e_low, e_dream = _mean_nrmse(DRF * y_low, full), _mean_nrmse(restored, full)
    assert e_dream < 0.6 * e_low, (e_dream, e_low)
    e_k = _mean_nrmse(trained.restore(y_low, DRF, n_draws=3), full)  # test-time ensemble: no worse
    assert e_k < 1.02 * e_dream, (e_k, e_dream)
    for key in ("s1_loss", "s2a_loss", "s2b_loss"):
        curve = trained.history[key]
        assert np.mean(curve[-10:]) < np.mean(curve[:10]), key


def test_tiny_dream_mlem_beats_low_dose_mlem(trained, tiny_data):
    ds, items, y_low, _ = _test_split(tiny_data)
    p_low, p_dream, s_low, s_dream = [], [], [], []
    for i, it in enumerate(items):
        model = dataset_forward_model(ds.manifest, it["mult"], it["additive"])
        y_hat, x_dream = trained.restore_and_reconstruct(y_low[i].numpy(), DRF, model, "mlem", MLEM_ITERATIONS)
        assert isinstance(x_dream, np.ndarray) and x_dream.shape == tuple(it["truth"].shape)
        x_low = reconstruct(model, DRF * y_low[i], "mlem", MLEM_ITERATIONS).numpy()
        truth = it["truth"].numpy()
        p_low.append(psnr(x_low, truth))
        p_dream.append(psnr(x_dream, truth))
        s_low.append(ssim(x_low, truth))
        s_dream.append(ssim(x_dream, truth))
    assert np.mean(p_dream) > np.mean(p_low) + 2.0, (np.mean(p_dream), np.mean(p_low))
    assert np.mean(s_dream) > np.mean(s_low), (np.mean(s_dream), np.mean(s_low))


def test_trained_model_saved_and_reloaded(trained, tmp_path):
    path = trained.save(tmp_path / "m.safetensors")
    loaded = DREAM.load(path)
    assert set(loaded.nets.keys()) == {"cpen_s1", "cpen_s2", "denoiser", "restorer"}
    y = torch.poisson(torch.full(SHAPE, 3.0), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(loaded.restore(y, DRF), trained.restore(y, DRF))
    assert loaded.history["s1_loss"] == trained.history["s1_loss"]


@pytest.mark.parametrize("change", [{"n_channels": 1}, {"prior": False}], ids=["N=1", "no-prior"])
def test_ablation_configs_train_and_restore(tiny_data, change):
    config = CONFIG.replace(s1_steps=4, s2a_steps=2, s2b_steps=2, **change)
    model = train_dream(config, SliceDataset(tiny_data, "train", DRF, "dream"))
    y = torch.poisson(torch.full((2,) + SHAPE, 3.0), generator=torch.Generator().manual_seed(5))
    out = model.restore(y, DRF)
    assert out.shape == y.shape and bool((out >= 0).all())
    if change.get("prior") is False:
        assert set(model.nets.keys()) == {"restorer"} and "s2a_loss" not in model.history
        assert model.nets["restorer"].prior_dim == 0
    else:
        assert model.nets["restorer"].in_channels == 1 and len(model.history["s2b_loss"]) == 2


def test_train_rejects_bad_dataset(tiny_data):
    with pytest.raises(ValueError, match="normalisation='dream'"):
        train_dream(CONFIG, SliceDataset(tiny_data, "train", DRF, "red"))
    with pytest.raises(TypeError, match="config must be a DREAMConfig"):
        train_dream({"s1_steps": 1}, tiny_data)
