"""Patch training (random crops) and warm starts of image diffusion models."""

import pytest
import torch

from pettk.diffusion import image_model
from pettk.diffusion.train import random_crops, random_flips


def _recording_loss(seen):
    def loss(model, batch, generator, part):
        seen.append({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)})
        return torch.zeros(())
    return loss


def test_random_crops_cut_aligned_windows_of_the_right_size():
    ramp = torch.arange(20 * 24, dtype=torch.float32).reshape(1, 20, 24)
    batch = {"x": torch.stack([ramp, ramp + 1000]), "cond": torch.stack([-ramp, -ramp - 1000]), "id": [0, 1]}
    seen = []
    random_crops(_recording_loss(seen), 8)(None, batch, torch.Generator().manual_seed(3), slice(None))
    x, cond = seen[0]["x"], seen[0]["cond"]
    assert x.shape == cond.shape == (2, 1, 8, 8)
    torch.testing.assert_close(cond, -x)                       # the same window of image and condition
    for k, offset in enumerate((0, 1000)):
        top, left = divmod(int(x[k, 0, 0, 0] - offset), 24)
        torch.testing.assert_close(x[k, 0], ramp[0, top:top + 8, left:left + 8] + offset)
    # the windows come from the trainer's generator: the same seed gives the same windows
    again = []
    random_crops(_recording_loss(again), 8)(None, batch, torch.Generator().manual_seed(3), slice(None))
    torch.testing.assert_close(again[0]["x"], x)


def test_random_crops_reject_bad_sizes():
    with pytest.raises(ValueError, match="crop size"):
        random_crops(_recording_loss([]), 0)
    with pytest.raises(ValueError, match="crop size"):
        random_crops(_recording_loss([]), 4.5)
    with pytest.raises(ValueError, match="larger than the training images"):
        random_crops(_recording_loss([]), 32)(None, {"x": torch.zeros(2, 1, 16, 16)}, torch.Generator(), slice(None))


def test_random_flips_reverse_both_axes_of_the_same_samples_in_every_key():
    ramp = torch.arange(6 * 5, dtype=torch.float32).reshape(6, 5)
    low = torch.stack([ramp + 100 * k for k in range(64)])
    batch = {"low": low, "full": -low}
    seen = []
    flips = random_flips(_recording_loss(seen), keys=("low", "full"))
    flips(None, batch, torch.Generator().manual_seed(1), slice(None))
    out = seen[0]["low"]
    torch.testing.assert_close(seen[0]["full"], -out)          # the same samples flipped in both keys
    flipped = [k for k in range(64) if not torch.equal(out[k], low[k])]
    for k in range(64):
        torch.testing.assert_close(out[k], low[k].flip(-2, -1) if k in flipped else low[k])
    assert 16 <= len(flipped) <= 48                            # about half (binomial(64, 1/2))
    again = []
    flips = random_flips(_recording_loss(again), keys=("low", "full"))
    flips(None, batch, torch.Generator().manual_seed(1), slice(None))
    torch.testing.assert_close(again[0]["low"], out)           # drawn from the trainer's generator


def _tiny(steps=30, **data):
    return image_model.merge_config(image_model.TINY, {
        "unet": {"base_channels": 8, "channel_mults": [1, 2]}, "data": data,
        "train": {"steps": steps, "batch_size": 4, "checkpoint_every": 0, "warmup_steps": 2}})


def _blobs(n=8, size=16):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return [{"x": (torch.exp(-((xx - 0.1 * k) ** 2 + yy ** 2) * 4))[None]} for k in range(n)]


def test_patch_trained_model_denoises_whole_images(tmp_path):
    """Trained on 8x8 windows, the x0-model is applied to the whole 16x16 image and removes noise."""
    model, schedule, trainer = image_model.train_image_diffusion(_tiny(steps=200, crop=8), tmp_path, dataset=_blobs(),
                                                                 progress=False)
    assert trainer.history.loss[-1] < trainer.history.loss[0]
    x0 = torch.stack([b["x"] for b in _blobs()])
    t = torch.full((x0.shape[0],), 60)
    x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        estimate = model(x_t, t)
    noisy_error = (x_t / schedule.alphas_cumprod[60].sqrt() - x0).square().mean()
    assert estimate.shape == x0.shape
    assert (estimate - x0).square().mean() < 0.2 * noisy_error


def test_init_from_starts_at_the_trained_weights(tmp_path):
    first, _, _ = image_model.train_image_diffusion(_tiny(), tmp_path / "a", dataset=_blobs(), progress=False)
    config = _tiny(steps=1)
    config["train"]["lr"] = 1e-12                              # one step that cannot move the weights
    config["train"]["ema_decay"] = 0.0
    second, _, trainer = image_model.train_image_diffusion(config, tmp_path / "b", dataset=_blobs(), progress=False,
                                                           init_from=tmp_path / "a" / "model.safetensors")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9, msg=name)
    fresh, _, _ = image_model.train_image_diffusion(config, None, dataset=_blobs(), progress=False)
    assert any(not torch.allclose(a, b) for a, b in zip(first.state_dict().values(), fresh.state_dict().values()))


def test_init_from_refuses_another_network(tmp_path):
    image_model.train_image_diffusion(_tiny(steps=2), tmp_path, dataset=_blobs(), progress=False)
    other = _tiny(steps=2)
    other["unet"]["base_channels"] = 4
    with pytest.raises(ValueError, match="holds another network"):
        image_model.train_image_diffusion(other, None, dataset=_blobs(), progress=False,
                                          init_from=tmp_path / "model.safetensors")


def test_ddip_init_from_starts_at_the_trained_weights(tmp_path):
    from pettk.priors.ddip import DDIP, DDIPConfig, phantom_training_images, train_ddip

    config = DDIPConfig.TINY.replace(train_steps=3, batch_size=2, warmup_steps=1)
    images = phantom_training_images(config, 2, 1)
    first = train_ddip(config, images, out_dir=tmp_path / "a")
    frozen = config.replace(train_steps=1, lr=1e-12, ema_decay=0.0)
    second = train_ddip(frozen, images, init_from=tmp_path / "a" / "ddip.safetensors")
    for (name, a), b in zip(first.net.state_dict().items(), second.net.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9, msg=name)
    other = config.replace(net=config.net.replace(base_channels=8), train_steps=1)
    with pytest.raises(ValueError, match="holds another network"):
        train_ddip(other, images, init_from=tmp_path / "a" / "ddip.safetensors")
    assert isinstance(DDIP.load(tmp_path / "a" / "ddip.safetensors"), DDIP)


def test_cli_init_from_is_refused_where_it_does_not_apply(tmp_path, capsys):
    from pettk.cli import main

    with pytest.raises(SystemExit, match="--init-from is for diffusion, ddip"):
        main(["train", "red", "-o", str(tmp_path), "--init-from", "red-drf20"])
    with pytest.raises(SystemExit, match="neither a shipped model"):
        main(["train", "diffusion", "-o", str(tmp_path), "--init-from", str(tmp_path / "missing.safetensors")])


def test_an_interrupted_cli_training_ends_with_the_resume_status(capsys):
    """SIGTERM (a session ending) inside `pettk train`: one line saying how to resume, exit status
    75 like a finished chunk, and the SIGTERM handler before the run is restored."""
    import argparse
    import signal

    from pettk.cli.train import EXIT_CHUNK_ENDED, _chunk_of_training

    before = signal.getsignal(signal.SIGTERM)
    with _chunk_of_training(argparse.Namespace(kind="diffusion", max_minutes=None)) as chunk:
        assert signal.getsignal(signal.SIGTERM) is not before
        raise KeyboardInterrupt("signal 15")
    assert chunk.status == EXIT_CHUNK_ENDED
    assert "interrupted (signal 15)" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before
