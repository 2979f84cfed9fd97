"""RED (Ai et al., MedIA 2025): schedules, forward/reverse process, restore() contract, tiny training."""

import numpy as np
import pytest
import torch

from pettk.diffusion.nets import RED_TINY
from pettk.metrics import nrmse
from pettk.priors import (
    RED,
    REDConfig,
    ResidualSchedule,
    SinogramRestorer,
    apply_net,
    dataset_forward_model,
    gaussian_ssim,
    normalise_red,
    reconstruct,
    red_sample,
    train_red,
)
from pettk.sim.datasets import SliceDataset

DRF = 20.0
# A small network for the tests: 2 levels, 2 heads × 8 dims of linear attention (METHODS §3.8).
NET = RED_TINY.replace(channel_mults=(1, 2), attention_heads=2, attention_head_channels=8, image_size=(32, 48))
#: With the DCN the restored sinogram may be at most this factor worse (NRMSE) than without it.
DCN_TOLERANCE = 1.02


# ---------------------------------------------------------------------------------------------
# Schedules and the process
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [50, 500])
def test_schedules(T):
    s = ResidualSchedule(T)
    a, b = s.alpha.numpy(), s.beta.numpy()
    assert a.shape == b.shape == (T + 1,)
    assert a[0] == pytest.approx(1e-4) and a[0] >= 1e-4 and a[-1] == pytest.approx(1.0)
    da = np.diff(a)
    assert np.all(da > 0) and np.all(np.diff(da[1:]) <= 1e-12)  # monotone; concave (after the 1e-4 floor at k=0)
    assert np.all(b >= 0) and b.sum() == pytest.approx(1.0)
    assert np.argmax(b) == T and b[-1] == pytest.approx(4 * T / (T + 1) ** 2)  # exactly 1 / sum_k (k/T)^3
    assert b[-1] == pytest.approx(4 / T, rel=2.5 / T)  # ≈ 4/T (0.008 at T = 500)


def test_schedule_rejects_bad_T_and_steps():
    with pytest.raises(ValueError, match="T must be"):
        ResidualSchedule(0)
    with pytest.raises(ValueError, match="steps must be"):
        ResidualSchedule(50).timesteps(7)


def test_forward_path_endpoints():
    g = torch.Generator().manual_seed(0)
    x0, x_T = torch.rand(3, 8, 10, generator=g), torch.rand(3, 8, 10, generator=g)
    s = ResidualSchedule(50)
    R = x_T - x0
    torch.testing.assert_close(s.q_sample(x0, R, 50), x_T)
    torch.testing.assert_close(s.q_sample(x0, R, 0), x0, atol=1e-4, rtol=0)
    k = torch.tensor([0, 25, 50])
    xk = s.q_sample(x0, R, k)
    torch.testing.assert_close(xk[2], x_T[2])
    torch.testing.assert_close(xk[1], x0[1] + 0.75 * R[1])  # alpha_{T/2} = 1 - 0.5^2


@pytest.mark.parametrize("steps", [1, 10, 50])
def test_reverse_with_oracle_ren_and_zero_dcn_recovers_x0(steps):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 8, 10, generator=g, dtype=torch.float64) * 2 - 1
    x_T = x0 + 0.3 * torch.randn(2, 8, 10, generator=g, dtype=torch.float64)
    s = ResidualSchedule(50)
    R = x_T - x0
    out = red_sample(lambda x, k: R, lambda x, k: torch.zeros_like(x), x_T, s, steps)
    torch.testing.assert_close(out, s.q_sample(x0, R, 0), atol=1e-12, rtol=0)  # the state x_0 exactly
    torch.testing.assert_close(out, x0, atol=1.01e-4 * float(R.abs().max()), rtol=0)


def test_reverse_adds_drift_at_k_minus_delta():
    s = ResidualSchedule(50)
    seen = []

    def dcn(x, k):
        seen.append(int(k[0]))
        return torch.ones_like(x)

    x_T = torch.zeros(1, 4, 4, dtype=torch.float64)
    out = red_sample(lambda x, k: torch.zeros_like(x), dcn, x_T, s, 10)
    assert seen == list(range(45, 0, -5))  # k - Δ, the last (β_0 = 0) correction skipped
    expected = float(sum(s.beta[k] for k in seen))
    torch.testing.assert_close(out, torch.full_like(out, expected))  # the drift is added


def test_gaussian_ssim_identity_and_padding():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 20, 30, generator=g) * 2 - 1
    assert float(gaussian_ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    other = torch.rand(2, 20, 30, generator=g) * 2 - 1
    assert float(gaussian_ssim(x, other)) < 0.2
    net = NET.build()
    out = apply_net(net, torch.rand(2, 13, 21, generator=g), torch.tensor([1, 5]))
    assert out.shape == (2, 13, 21)


def test_normalisation_matches_dataset(tiny_data):
    root = tiny_data
    raw, red = SliceDataset(root, "test", DRF, "none")[0], SliceDataset(root, "test", DRF, "red")[0]
    x_T, v = normalise_red(raw["low"][None])
    torch.testing.assert_close(x_T[0], red["low"])
    assert float(v) == pytest.approx(red["scale"])


def test_config_roundtrip_and_validation():
    for cfg in (REDConfig.TINY, REDConfig.GPU, REDConfig.FULL):
        assert REDConfig.from_dict(cfg.to_dict()) == cfg
    assert REDConfig.GPU.T == 500 and REDConfig.GPU.sampling_steps == 50 and REDConfig.TINY.T == 50
    with pytest.raises(ValueError, match="divisible"):
        REDConfig(T=50, sampling_steps=7).validate()


# ---------------------------------------------------------------------------------------------
# restore() contract (untrained networks suffice)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return RED(REDConfig(net=NET, T=10, sampling_steps=2, drf=DRF), (32, 49))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_restore_keeps_shape_dtype_device(untrained, dtype, batch):
    g = torch.Generator().manual_seed(3)
    y = torch.poisson(torch.full(batch + (32, 49), 2.0, dtype=dtype), generator=g)
    out = untrained.restore(y, DRF)
    assert isinstance(out, torch.Tensor) and out.shape == y.shape and out.dtype == dtype
    assert out.device == y.device and bool((out >= 0).all())
    assert isinstance(untrained, SinogramRestorer)


def test_restore_numpy_in_numpy_out(untrained):
    y = np.random.default_rng(0).poisson(2.0, size=(2, 32, 49))
    out = untrained.restore(y.astype(np.float64), DRF)
    assert isinstance(out, np.ndarray) and out.shape == y.shape and out.dtype == np.float64
    out_int = untrained.restore(y, DRF)  # integer counts are accepted, result float32
    assert isinstance(out_int, np.ndarray) and out_int.dtype == np.float32


def test_restore_rejects_bad_input(untrained):
    y = torch.ones(32, 49)
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


def test_save_load_roundtrip(untrained, tmp_path):
    path = untrained.save(tmp_path / "red.safetensors")
    loaded = RED.load(path)
    y = torch.poisson(torch.full((32, 49), 3.0), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(loaded.restore(y, DRF), untrained.restore(y, DRF))
    assert loaded.config == untrained.config and loaded.sinogram_shape == (32, 49)


# ---------------------------------------------------------------------------------------------
# Tiny training (trained once per module)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(restorer_data):
    """8 subjects x 3 slices of 32² parallel-beam data at DRF 20 (conftest.restorer_data, shared with
    test_red/test_dream, which build the same set)."""
    assert DRF == 20.0
    return restorer_data


@pytest.fixture(scope="module")
def trained(tiny_data):
    config = REDConfig(net=NET, T=50, sampling_steps=10, ren_steps=240, dcn_steps=120, ren_lr=1e-3, dcn_lr=1e-3,
                       batch_size=8, drf=DRF, seed=0)
    return train_red(config, tiny_data)


def _test_split(root):
    ds = SliceDataset(root, "test", DRF, "none")
    items = [ds[i] for i in range(len(ds))]
    y_low = torch.stack([it["low"] for it in items]) / DRF  # raw low-dose counts
    return ds, items, y_low, torch.stack([it["full"] for it in items])


def _mean_nrmse(x, ref):
    return float(np.mean([nrmse(x[i], ref[i]) for i in range(len(ref))]))


def test_tiny_red_beats_low_dose_and_dcn_helps(trained, tiny_data):
    _, _, y_low, full = _test_split(tiny_data)
    with_dcn = trained.restore(y_low, DRF)
    without = trained.restore(y_low, DRF, use_dcn=False)
    e_low, e_dcn, e_ren = _mean_nrmse(DRF * y_low, full), _mean_nrmse(with_dcn, full), _mean_nrmse(without, full)
    assert e_dcn < e_low, (e_dcn, e_low)
    assert e_dcn <= DCN_TOLERANCE * e_ren, (e_dcn, e_ren)
    assert trained.history["ren_loss"][-1] < trained.history["ren_loss"][0]


def test_patch_trained_red_restores_whole_sinograms(tiny_data):
    """crop_size + augment (the 128² models' recipe): trained on 16² windows with flips, applied to
    whole 32 x 49 sinograms, RED still restores them better than the scaled low-dose data."""
    config = REDConfig(net=NET, T=50, sampling_steps=1, ren_steps=240, dcn_steps=0, ren_lr=1e-3, batch_size=8,
                       drf=DRF, seed=0, crop_size=16, augment=True)   # REN only, one step: the 128² models' recipe
    model = train_red(config, tiny_data)
    _, _, y_low, full = _test_split(tiny_data)
    restored = model.restore(y_low, DRF)
    assert restored.shape == full.shape
    assert _mean_nrmse(restored, full) < 0.9 * _mean_nrmse(DRF * y_low, full)
    with pytest.raises(ValueError, match="crop_size=64 is larger"):
        train_red(config.replace(crop_size=64), tiny_data)
    with pytest.raises(ValueError, match="crop_size"):
        REDConfig(crop_size=4).validate()


def test_trained_restore_then_reconstruct(trained, tiny_data):
    ds, items, y_low, _ = _test_split(tiny_data)
    it = items[0]
    model = dataset_forward_model(ds.manifest, it["mult"], it["additive"])
    y_hat = trained.restore(y_low[0].numpy(), DRF)
    for method in ("osem", "mlem", "fbp"):
        image = reconstruct(model, y_hat, method, n_iter=2, n_subsets=4)
        assert isinstance(image, np.ndarray) and image.shape == tuple(it["truth"].shape)
        assert np.all(np.isfinite(image))
    with pytest.raises(ValueError, match="method must be one of"):
        reconstruct(model, y_hat, "art")
