"""DDIP's MR path made robust (issue 22 item 3): MR dropout and mismatch in pretraining, classifier-free
MR guidance and the data-driven fallback to no MR at reconstruction."""

import pytest
import torch
from test_ddip import _scan

from pettk.priors.ddip import DDIP, DDIPConfig, corrupted_condition

ROBUST = DDIPConfig.TINY.replace(mr_dropout=0.2, mr_mismatch=0.2, steps=4, start_t=20)


def _recording_loss():
    seen = []

    def loss(model, batch, generator, part):
        seen.append(batch["cond"].clone())
        return torch.zeros(())

    return loss, seen


def _batch(b=64):
    # sample i's condition is the constant i + 1, so a swap is visible
    return {"x": torch.zeros(b, 1, 4, 4), "cond": (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1)
            .expand(b, 1, 4, 4).clone()}


def test_corrupted_condition_drops_and_swaps_with_the_trainers_generator():
    loss, seen = _recording_loss()
    batch = _batch()
    corrupted_condition(loss, 1.0, 0.0)(None, batch, torch.Generator().manual_seed(0), slice(0, 64))
    assert float(seen[-1].abs().sum()) == 0.0                         # all dropped
    corrupted_condition(loss, 0.0, 1.0)(None, batch, torch.Generator().manual_seed(0), slice(0, 64))
    values = seen[-1][:, 0, 0, 0]
    assert bool((values != batch["cond"][:, 0, 0, 0]).all())          # every sample has another's MR
    assert sorted(values.tolist()) == sorted(batch["cond"][:, 0, 0, 0].tolist())   # a permutation of the batch
    counts = {"kept": 0, "dropped": 0, "swapped": 0}
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        corrupted_condition(loss, 0.3, 0.2)(None, batch, gen, slice(0, 64))
        v, own = seen[-1][:, 0, 0, 0], batch["cond"][:, 0, 0, 0]
        counts["dropped"] += int((v == 0).sum())
        counts["kept"] += int((v == own).sum())
        counts["swapped"] += int(((v != own) & (v != 0)).sum())
    n = 40 * 64
    assert counts["dropped"] / n == pytest.approx(0.3, abs=0.03)
    assert counts["swapped"] / n == pytest.approx(0.2, abs=0.03)
    # the same generator state gives the same corruption (exact resume)
    a = corrupted_condition(loss, 0.3, 0.2)
    a(None, batch, torch.Generator().manual_seed(7), slice(0, 64))
    a(None, batch, torch.Generator().manual_seed(7), slice(0, 64))
    torch.testing.assert_close(seen[-1], seen[-2])


def test_config_checks_the_mr_settings():
    with pytest.raises(ValueError, match="mr_dropout \\+ mr_mismatch must be <= 1"):
        DDIPConfig.TINY.replace(mr_dropout=0.6, mr_mismatch=0.6).validate()
    with pytest.raises(ValueError, match="need a model pretrained with mr_dropout > 0"):
        DDIPConfig.TINY.replace(mr_guidance=0.5).validate()
    with pytest.raises(ValueError, match="need a model pretrained with mr_dropout > 0"):
        DDIPConfig.TINY.replace(mr_fallback=True).validate()
    unconditional = DDIPConfig.TINY.net.replace(cond_channels=0)
    with pytest.raises(ValueError, match="for an MR-conditioned net"):
        DDIPConfig.TINY.replace(net=unconditional, mr_dropout=0.1).validate()
    assert DDIPConfig.from_dict(ROBUST.to_dict()) == ROBUST


@pytest.fixture(scope="module")
def robust_untrained():
    torch.manual_seed(0)
    net = ROBUST.net.build()
    with torch.no_grad():  # a fresh U-Net outputs zeros; give it a non-trivial output layer
        net.out_conv.weight.normal_(0, 0.02)
        net.input_conv.weight.normal_(0, 0.2)
    return DDIP(ROBUST, net)


def test_guidance_zero_ignores_the_mr_and_the_fallback_chooses(robust_untrained):
    act, mr, model, y = _scan("fdg", 3e4)
    other = _scan("fdg", 3e4, seed=2024)[1]
    free = robust_untrained.replace(mr_guidance=0.0)
    a = free.reconstruct(model, y, mr=mr, seed=1, adapt=False)
    b = free.reconstruct(model, y, mr=other, seed=1, adapt=False)
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b))          # the MR does not matter
    assert free.last_info["mr_guidance"] == 0.0
    guided = robust_untrained.reconstruct(model, y, mr=mr, seed=1, adapt=False)
    assert not torch.allclose(torch.as_tensor(guided), torch.as_tensor(a))     # it does with guidance 1
    half = robust_untrained.replace(mr_guidance=0.5).reconstruct(model, y, mr=mr, seed=1, adapt=False)
    assert not torch.allclose(torch.as_tensor(half), torch.as_tensor(a))
    fallback = robust_untrained.replace(mr_fallback=True)
    fallback.reconstruct(model, y, mr=other, seed=1, adapt=False)
    assert fallback.last_info["mr_guidance"] in (0.0, 1.0)
    with pytest.raises(ValueError, match="fixed by the pretrained model"):
        robust_untrained.replace(mr_dropout=0.0)


def test_final_em_refinement_is_penalised_em_from_the_last_estimate(robust_untrained):
    from pettk.diffusion.posterior import penalised_em_step
    from pettk.likelihood import poisson_nll

    act, mr, model, y = _scan("fdg", 3e4)
    plain = torch.as_tensor(robust_untrained.reconstruct(model, y, mr=mr, seed=1, adapt=False))
    beta_abs = robust_untrained.last_info["beta_abs"]
    refined = torch.as_tensor(robust_untrained.replace(final_em_iterations=3).reconstruct(model, y, mr=mr, seed=1,
                                                                                         adapt=False))
    by_hand = plain.clamp_min(1e-6 * float(plain.max()) + 1e-12)
    for _ in range(3):
        by_hand = penalised_em_step(model, torch.as_tensor(y), by_hand, plain, beta_abs)
    torch.testing.assert_close(refined, by_hand, rtol=1e-5, atol=1e-6 * float(plain.max()))
    assert bool((refined >= 0).all())
    y_t = torch.as_tensor(y)
    nll = [float(poisson_nll(y_t, model.forward(x))) for x in (refined, plain)]
    assert nll[0] < nll[1]                          # nearer the data
    with pytest.raises(ValueError, match="final_em_iterations"):
        ROBUST.replace(final_em_iterations=-1).validate()
