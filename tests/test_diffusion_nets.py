"""Tests for pettk.diffusion.nets: shapes, feature injection, conditioning, errors, LoRA, counts."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pettk.diffusion.nets import (
    DDIP_FULL,
    DDIP_TINY,
    DREAM_FULL,
    DREAM_TINY,
    GDFN,
    LEGOPET_FULL,
    LEGOPET_TINY,
    MDTA,
    PRESETS,
    RED_FULL,
    RED_TINY,
    AttentionBlock,
    ChannelLayerNorm,
    ConvNeXtUNet,
    LatentDenoiser,
    LoRAConv1d,
    LoRAConv2d,
    LoRALayer,
    LoRALinear,
    ResBlock,
    RestormerBlock,
    UNet,
    get_config,
    inject_lora,
    lora_parameters,
    mark_only_lora_and_bias_trainable,
    merge_lora,
    reset_lora,
    timestep_embedding,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one intra-op thread avoids OpenMP spin-waiting on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def randomise(module, seed=0, std=0.05):
    """Perturb every parameter (zero-initialised convs included) so outputs and gradients are generic."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def tiny_unet(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=1, out_channels=1, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                attention_levels=(1,), num_heads=2)
    args.update(kw)
    return randomise(UNet(**args)).eval()


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------

def test_timestep_embedding_values():
    t = torch.tensor([0.0, 3.0])
    e = timestep_embedding(t, 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0, :4], torch.ones(4)) and torch.allclose(e[0, 4:], torch.zeros(4))
    assert torch.isclose(e[1, 0], torch.cos(torch.tensor(3.0))) and torch.isclose(e[1, 4], torch.sin(torch.tensor(3.0)))
    assert timestep_embedding(t, 7).shape == (2, 7)


def test_channel_layer_norm_matches_layer_norm():
    x = torch.randn(2, 6, 5, 4)
    ln = randomise(ChannelLayerNorm(6))
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, 1e-5).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-5)
    assert n_params(ChannelLayerNorm(6, bias=False)) == 6


@pytest.mark.parametrize("kw, shape", [({}, (2, 24, 8, 8)), ({"down": True}, (2, 24, 4, 4)),
                                       ({"up": True}, (2, 24, 16, 16))])
def test_resblock_shapes_and_identity_at_init(kw, shape):
    x = torch.randn(2, 16, 8, 8)
    block = ResBlock(16, 24, emb_dim=32, **kw)
    assert block(x, torch.randn(2, 32)).shape == shape
    same = ResBlock(16, 16, emb_dim=32)
    assert torch.equal(same(x, torch.randn(2, 32)), x)  # zero-initialised last conv


def test_attention_block_heads_and_shape():
    block = randomise(AttentionBlock(32, num_head_channels=8))
    assert block.num_heads == 4
    x = torch.randn(2, 32, 4, 4)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="num_heads=3 must divide channels=32"):
        AttentionBlock(32, num_heads=3)


# ---------------------------------------------------------------------------------------------
# UNet
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(16, 16), (32, 32), (48, 24), (20, 36)])
@pytest.mark.parametrize("updown", [False, True])
def test_unet_output_shapes(size, updown):
    net = tiny_unet(out_channels=3, resblock_updown=updown)
    x = torch.randn(2, 1, *size)
    for t in (torch.tensor([0, 999]), torch.tensor([0.5, 17.25]), 5, torch.tensor(3)):
        assert net(x, t).shape == (2, 3) + size


def test_unet_default_arguments():
    net = UNet()
    assert net.downsample_factor == 8 and net.level_channels == [64, 128, 128, 256]
    assert net(torch.randn(1, 1, 32, 40), torch.tensor([10])).shape == (1, 1, 32, 40)


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_tiny_configs_run_in_float64(method):
    cfg = PRESETS[method]["tiny"]
    h, w = cfg.image_size
    x = torch.randn(1, 3 if method == "dream" else 1, h, w, dtype=torch.float64)
    if method == "red":
        out = cfg.build().double()(x, torch.tensor([3]))
    elif method == "ddip":
        out = cfg.build().double()(x, torch.tensor([3]), cond=x)
    elif method == "dream":
        nets = cfg.build().double()
        out = nets["restorer"](x, nets["cpen_s1"](x, x))
        assert nets["denoiser"](out.new_zeros(1, 32), 2, nets["cpen_s2"](x)).dtype == torch.float64
    else:
        nets = cfg.build().double()
        out = nets["cdpm"](x, torch.tensor([3]), cond=x, features=nets["pnpnet"].encoder_features(x))
    assert out.dtype == torch.float64 and out.shape[-2:] == (h, w)


def test_unet_without_time_embedding_ignores_t():
    net = tiny_unet(time_embedding=False, use_scale_shift_norm=False)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(net(x), net(x, torch.tensor([1, 2])))
    assert not any("time_embed" in n or "emb_proj" in n for n, _ in net.named_parameters())


def test_unet_cond_is_concatenated():
    cond_net = tiny_unet(in_channels=1, cond_channels=2)
    cat_net = tiny_unet(in_channels=3, cond_channels=0)
    cat_net.load_state_dict(cond_net.state_dict())
    x, c, t = torch.randn(2, 1, 16, 16), torch.randn(2, 2, 16, 16), torch.tensor([4, 9])
    out = cond_net(x, t, cond=c)
    assert torch.allclose(out, cat_net(torch.cat([x, c], 1), t), atol=1e-6)
    assert not torch.allclose(out, cond_net(x, t, cond=torch.zeros_like(c)))
    with pytest.raises(ValueError, match="cond is required"):
        cond_net(x, t)
    with pytest.raises(ValueError, match="cond must have 2 channels"):
        cond_net(x, t, cond=torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="cond must have shape"):
        cond_net(x, t, cond=torch.randn(2, 2, 16, 8))
    with pytest.raises(ValueError, match="cond_channels=0"):
        cat_net(torch.randn(2, 3, 16, 16), t, cond=c)


def test_unet_bad_inputs_raise_clear_errors():
    net = tiny_unet()
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"x must have 1 channels .* got 2"):
        net(torch.randn(2, 2, 16, 16), t)
    with pytest.raises(ValueError, match=r"x spatial size \(18, 16\) must be divisible by 4"):
        net(torch.randn(2, 1, 18, 16), t)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        net(torch.randn(1, 16, 16), t)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net([[1.0]], t)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        net(torch.ones(2, 1, 16, 16, dtype=torch.int64), t)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        net(torch.randn(2, 1, 16, 16), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="t is required"):
        net(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"attention_levels entries must be level indices in \[0, 2\]"):
        UNet(channel_mults=(1, 2, 2), attention_levels=(3,))
    with pytest.raises(TypeError, match="base_channels must be an int"):
        UNet(base_channels=16.0)


def test_unet_feature_injection():
    cfg = LEGOPET_TINY
    torch.manual_seed(1)
    pnp, cdpm = randomise(cfg.build_pnpnet(), 1).eval(), randomise(cfg.build_cdpm(), 2).eval()
    h, w = cfg.image_size
    sino, x, t = torch.randn(2, 1, h, w), torch.randn(2, 1, h, w), torch.tensor([3, 70])
    names_before = [n for n, _ in cdpm.named_parameters()]
    count_before = n_params(cdpm)

    with torch.no_grad():
        feats = pnp.encoder_features(sino)
    expected = cdpm.feature_shapes(h, w)
    assert [tuple(f.shape[1:]) for f in feats["encoder"]] == expected["encoder"] == [(16, 32, 32), (32, 16, 16)]
    assert tuple(feats["middle"].shape[1:]) == expected["middle"] == (32, 16, 16)

    base = cdpm(x, t, cond=sino)
    zeros = {"encoder": [torch.zeros_like(f) for f in feats["encoder"]], "middle": torch.zeros_like(feats["middle"])}
    assert torch.equal(cdpm(x, t, cond=sino, features=zeros), base)
    with_feats = cdpm(x, t, cond=sino, features=feats)
    assert (with_feats - base).abs().max() > 1e-3
    only_mid = cdpm(x, t, cond=sino, features={"middle": feats["middle"]})
    only_l0 = cdpm(x, t, cond=sino, features={"encoder": [feats["encoder"][0], None]})
    assert (only_mid - base).abs().max() > 1e-4 and (only_l0 - base).abs().max() > 1e-4
    # no new parameters, no new state
    assert [n for n, _ in cdpm.named_parameters()] == names_before and n_params(cdpm) == count_before

    own = cdpm.encoder_features(x, t, cond=sino)
    assert [tuple(f.shape[1:]) for f in own["encoder"]] == expected["encoder"]
    with pytest.raises(ValueError, match="t is required"):
        cdpm.encoder_features(x, cond=sino)

    with pytest.raises(ValueError, match=r"features\['encoder'\] must have 2 maps"):
        cdpm(x, t, cond=sino, features={"encoder": feats["encoder"][:1]})
    with pytest.raises(ValueError, match=r"features\['middle'\] must have shape \(2, 32, 16, 16\)"):
        cdpm(x, t, cond=sino, features={"middle": torch.zeros(2, 16, 16, 16)})
    with pytest.raises(ValueError, match="unknown keys"):
        cdpm(x, t, cond=sino, features={"decoder": []})
    with pytest.raises(TypeError, match="features must be a dict"):
        cdpm(x, t, cond=sino, features=[1])


# ---------------------------------------------------------------------------------------------
# RED
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 64), (32, 48), (8, 16)])
def test_convnext_unet_shapes(size):
    net = randomise(RED_TINY.build()).eval()
    x = torch.randn(2, 1, *size)
    assert net(x, torch.tensor([0, 49])).shape == (2, 1) + size
    two_level = ConvNeXtUNet(base_channels=8, channel_mults=(1, 2), attention_heads=2, attention_head_channels=8)
    assert two_level(torch.randn(1, 1, 6, 10), 3).shape == (1, 1, 6, 10)
    assert n_params(two_level) == 63018


def test_convnext_unet_errors():
    net = RED_TINY.build()
    with pytest.raises(ValueError, match=r"x spatial size \(62, 64\) must be divisible by 4"):
        net(torch.randn(1, 1, 62, 64), torch.tensor([1]))
    with pytest.raises(ValueError, match="x must have 1 channels"):
        net(torch.randn(1, 2, 64, 64), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"t must have shape \(1,\)"):
        net(torch.randn(1, 1, 64, 64), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="channel_mults needs at least two"):
        ConvNeXtUNet(channel_mults=(1,))


# ---------------------------------------------------------------------------------------------
# DREAM
# ---------------------------------------------------------------------------------------------

def test_mdta_gdfn_shapes_and_prior_injection():
    x, z = torch.randn(2, 16, 12, 10), torch.randn(2, 32)
    mdta, gdfn = randomise(MDTA(16, 4, prior_dim=32)), randomise(GDFN(16, 2.0, prior_dim=32))
    assert mdta(x, z).shape == x.shape and gdfn(x, z).shape == x.shape
    assert mdta.temperature.shape == (4, 1, 1)
    # multiplicative modulation x·a + b: a zero prior zeroes the sub-layer input
    assert torch.allclose(mdta(x, torch.zeros_like(z)), mdta(torch.zeros_like(x), z * 0))
    assert not torch.allclose(mdta(x, z), mdta(x, z + 1))
    plain = MDTA(16, 2, prior_dim=0)
    assert plain(x).shape == x.shape and n_params(plain) == 2 + 3 * 16 * 16 + 27 * 16 + 16 * 16
    with pytest.raises(ValueError, match="z .* is required"):
        mdta(x)
    with pytest.raises(ValueError, match="num_heads=3 must divide channels=16"):
        MDTA(16, 3)


def test_restormer_block_parameter_formula():
    for c, heads in [(48, 1), (96, 2), (384, 8)]:
        assert n_params(RestormerBlock(c, heads, 2.0, False, 256)) == 10 * c * c + (67 + 4 * 256) * c + heads


def test_dream_networks_shapes_and_errors():
    nets = DREAM_TINY.build()
    x = torch.randn(2, 3, 48, 64)
    z = nets["cpen_s1"](x, x)
    assert z.shape == (2, DREAM_TINY.prior_dim) == (2, 32)
    assert nets["restorer"](x, z).shape == x.shape
    c = nets["cpen_s2"](x)
    zhat = nets["denoiser"](torch.randn(2, 32), torch.tensor([0, 3]), c)
    assert zhat.shape == (2, 32)
    assert nets["denoiser"].net[0].in_features == 2 * 32 + 1
    # global residual: with zero output conv the restorer is the identity
    g = DREAM_TINY.build_restorer()
    nn.init.zeros_(g.output.weight)
    assert torch.equal(g(x, z), x)
    with pytest.raises(ValueError, match=r"x spatial size \(44, 64\) must be divisible by 8"):
        nets["restorer"](torch.randn(2, 3, 44, 64), z)
    with pytest.raises(ValueError, match=r"z must have shape \(2, 32\)"):
        nets["restorer"](x, torch.randn(2, 16))
    with pytest.raises(ValueError, match="gt is required"):
        nets["cpen_s1"](x)
    with pytest.raises(ValueError, match="gt must be None"):
        nets["cpen_s2"](x, x)
    with pytest.raises(ValueError, match=r"lq spatial size \(30, 64\) must be divisible by 4"):
        nets["cpen_s2"](torch.randn(2, 3, 30, 64))
    with pytest.raises(ValueError, match=r"c must have shape \(2, 32\)"):
        nets["denoiser"](torch.randn(2, 32), 1, torch.randn(3, 32))


def test_latent_denoiser_time_scaling():
    den = LatentDenoiser(prior_dim=4, n_denoise_res=0, num_timesteps=4)
    with torch.no_grad():
        den.net[0].weight.zero_()
        den.net[0].bias.zero_()
        den.net[0].weight[:, 4] = 1.0  # the time column
    out = den(torch.zeros(1, 4), torch.tensor([2]), torch.zeros(1, 4))
    assert torch.allclose(out, torch.full((1, 4), 2 / 40))


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------

def test_lora_factor_counts():
    r = 3
    lin = LoRALinear(nn.Linear(10, 7), r)
    assert sum(p.numel() for p in lora_parameters(lin)) == r * (10 + 7)
    conv2 = LoRAConv2d(nn.Conv2d(6, 5, 3, padding=1), r)
    assert sum(p.numel() for p in lora_parameters(conv2)) == r * (6 * 3 * 3 + 5)
    conv1 = LoRAConv1d(nn.Conv1d(8, 24, 1), r)
    assert sum(p.numel() for p in lora_parameters(conv1)) == r * (8 * 1 + 24)
    strided = LoRAConv2d(nn.Conv2d(4, 4, 3, stride=2, padding=1), 2)
    x = torch.randn(1, 4, 9, 9)
    assert strided(x).shape == strided.base(x).shape == (1, 4, 5, 5)
    assert lin.scaling == 1.0 and LoRALinear(nn.Linear(3, 3), 4, alpha=2.0).scaling == 0.5
    assert all(not p.requires_grad for p in lin.base.parameters())
    with pytest.raises(TypeError, match="base must be nn.Linear"):
        LoRALinear(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        LoRALinear(nn.Linear(2, 2), 0)


def test_lora_on_unet_identity_trainability_reset_merge():
    net = tiny_unet(dropout=0.0)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 60])
    ref = net(x, t).detach()
    base_linear = {n: (m.in_features, m.out_features) for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    base_conv = {n: m.weight.shape for n, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))}

    wrapped = inject_lora(net, rank=2, targets=(ResBlock, AttentionBlock))
    assert wrapped and all(n.startswith(("down_blocks", "downsamplers", "middle", "up_blocks", "upsamplers"))
                           for n in wrapped)
    assert "input_conv" not in wrapped and "out_conv" not in wrapped
    assert not any(n.startswith("time_embed") for n in wrapped)
    assert torch.equal(net(x, t), ref)  # up-projection is zero at init

    # LoRA sizes: r·(in+out) per Linear, r·(in·k·k + out) per conv
    layers = dict((n, m) for n, m in net.named_modules() if isinstance(m, LoRALayer))
    for name, layer in layers.items():
        count = sum(p.numel() for p in lora_parameters(layer))
        if isinstance(layer, LoRALinear):
            fin, fout = base_linear[name]
            assert count == 2 * (fin + fout)
        else:
            shape = base_conv[name]
            assert count == 2 * (shape[1] * shape[2:].numel() + shape[0])

    trainable = mark_only_lora_and_bias_trainable(net)
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    assert names == {n for n, p in net.named_parameters() if any(p is q for q in trainable)}
    assert all("lora_" in n or n.endswith(".bias") for n in names)
    assert not any("time_embed" in n or "emb_proj" in n for n in names if n.endswith(".bias"))
    assert any(n.endswith("base.bias") for n in names) and any("norm.bias" in n for n in names)
    assert not any(n.endswith(".weight") and "lora_" not in n for n in names)

    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = (net(x, t) - 1.0).square().mean()
        loss.backward()
        opt.step()
    assert (net(x, t) - ref).abs().max() > 1e-3
    reset_lora(net, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(net(x, t), ref, atol=1e-6)

    # merging folds the (trained) update into plain layers
    for p in lora_parameters(net):
        with torch.no_grad():
            p.add_(0.1)
    before = net(x, t).detach()
    merged = merge_lora(net)
    assert merged and not any(isinstance(m, LoRALayer) for m in net.modules())
    assert torch.allclose(net(x, t), before, atol=1e-4)

    with pytest.raises(ValueError, match="no LoRA layers"):
        reset_lora(net)


def test_inject_lora_targets_and_double_injection():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Conv1d(8, 8, 1)))
    assert inject_lora(model, 2, targets=("2.",)) == ["2.0", "2.1"]
    assert isinstance(model[0], nn.Linear) and isinstance(model[2][0], LoRALinear)
    with pytest.raises(ValueError, match="already contains LoRA layers"):
        inject_lora(model, 2)
    other = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    assert inject_lora(other, 1, targets=lambda name, layer: name == "1") == ["1"]
    with pytest.raises(TypeError, match="targets entries must be str"):
        inject_lora(nn.Sequential(nn.Linear(2, 2)), 1, targets=(3,))
    with pytest.raises(ValueError, match="no LoRA layers"):
        mark_only_lora_and_bias_trainable(nn.Linear(2, 2))


def test_ddip_full_lora_budget():
    with torch.device("meta"):
        net = DDIP_FULL.build()
        inject_lora(net, rank=4, targets=(ResBlock, AttentionBlock))
        trainable = mark_only_lora_and_bias_trainable(net)
    n_train = sum(p.numel() for p in trainable)
    assert abs(n_train - 1.55e6) / 1.55e6 < 0.02  # METHODS §4.4: ≈1.55 M of ≈126 M (1.2 %)


# ---------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------

def _close(count, target, tol=0.02):
    return abs(count - target) / target < tol


def test_full_config_parameter_counts():
    with torch.device("meta"):
        red = RED_FULL.build()
        dream = DREAM_FULL.build()
        ddip = DDIP_FULL.build()
        lego = LEGOPET_FULL.build()
    assert _close(n_params(red), 14.47e6)                      # each of REN, DCN
    c = {k: n_params(v) for k, v in dream.items()}
    assert c["cpen_s1"] + c["restorer"] == 26_742_206          # METHODS hand count = DTM training log
    assert _close(c["cpen_s1"], 1.07e6) and _close(c["cpen_s2"], 1.05e6)
    assert _close(c["restorer"], 25.67e6) and _close(c["denoiser"], 0.197e6)
    assert _close(c["cpen_s2"] + c["restorer"] + c["denoiser"], 26.91e6)
    assert _close(n_params(ddip), 126e6)
    assert _close(n_params(lego["cdpm"]), 35.71e6)             # trainable in LegoPET (PnPNet frozen)


def test_tiny_config_parameter_counts():
    assert _close(n_params(RED_TINY.build()), 0.29e6, 0.05)
    d = DREAM_TINY.build()
    assert _close(n_params(d["cpen_s1"]) + n_params(d["restorer"]), 0.24e6, 0.05)
    assert 0.2e6 <= n_params(DDIP_TINY.build()) <= 0.5e6


def test_configs_are_frozen_and_selectable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RED_TINY.base_channels = 4
    assert RED_TINY.replace(base_channels=4).base_channels == 4
    assert get_config("ddip", "full") is DDIP_FULL
    with pytest.raises(ValueError, match="method must be one of"):
        get_config("dreamer")
    with pytest.raises(ValueError, match="size must be one of"):
        get_config("red", "huge")
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        DREAM_TINY.build_cpen(3)


def _tiny_losses(method, cfg):
    """Build the tiny networks of ``method`` (randomised), run one forward, return (modules, loss)."""
    torch.manual_seed(0)
    h, w = cfg.image_size
    if method == "red":
        net = randomise(cfg.build())
        return [net], net(torch.randn(2, 1, h, w), torch.tensor([1, 30])).square().mean()
    if method == "ddip":
        net = randomise(cfg.build())
        x = torch.randn(2, cfg.in_channels, h, w)
        return [net], net(x, torch.tensor([1, 500]), cond=torch.randn(2, cfg.cond_channels, h, w)).square().mean()
    if method == "dream":
        nets = randomise(cfg.build())
        lq, gt = torch.randn(2, 3, h, w), torch.randn(2, 3, h, w)
        z = nets["cpen_s1"](lq, gt)
        loss = (nets["restorer"](lq, z) - gt).abs().mean()
        zhat = nets["denoiser"](torch.randn_like(z), torch.tensor([3, 1]), nets["cpen_s2"](lq))
        return list(nets.values()), loss + (zhat - z.detach()).abs().mean()
    nets = randomise(cfg.build())
    sino, x = torch.randn(2, 1, h, w), torch.randn(2, 1, h, w)
    loss = (nets["pnpnet"](sino) - x).square().mean()
    eps = nets["cdpm"](x, torch.tensor([3, 90]), cond=sino, features=nets["pnpnet"].encoder_features(sino))
    return list(nets.values()), loss + eps.square().mean()


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_tiny_configs_gradient_reaches_every_parameter(method):
    modules, loss = _tiny_losses(method, PRESETS[method]["tiny"])
    loss.backward()
    for module in modules:
        for name, p in module.named_parameters():
            assert p.grad is not None, f"{method}: no gradient for {name}"
            assert p.grad.abs().sum() > 0, f"{method}: zero gradient for {name}"
            assert torch.isfinite(p.grad).all()
