"""PET-DDS on a DDIP network (``PETDDS.from_ddip``): the same sampler as an image-model PET-DDS,
classifier-free MR guidance of an MR-dropout DDIP, the intensity reference measured the DDIP way,
and the input checks."""

import numpy as np
import pytest
import torch
from test_ddip import _scan

from pettk.diffusion.image_model import TINY, _unet_from, build_schedule, merge_config
from pettk.priors import PETDDS, PETDDSConfig
from pettk.priors.ddip import DDIP, DDIPConfig
from pettk.sim.datasets import DatasetConfig, build_dataset

#: 3 subjects x 3 slices of 32 x 32: enough to measure a median (odd count: numpy and torch agree).
DATA = DatasetConfig(n_subjects=3, slices_per_subject=3, image_size=32, geometry="parallel", drfs=(20.0,),
                     counts_per_slice=1e4, reference_counts_factor=1.0, reference_iterations=1,
                     reference_subsets=1, split=(3, 0, 0), lesions=1, slice_range_mm=40.0)


def _untrained_petdds():
    config = merge_config(TINY, {"unet": {"base_channels": 8}})
    torch.manual_seed(0)
    net = _unet_from(config)
    with torch.no_grad():  # a fresh U-Net outputs zeros; give it a non-trivial output layer
        net.out_conv.weight.normal_(0, 0.05)
    cfg = PETDDSConfig(reference_mean=0.3, image_size=(32, 32), steps=3, em_iterations=1)
    return PETDDS(net.eval(), build_schedule(config["schedule"]), config, cfg)


def _robust_ddip(**changes):
    config = DDIPConfig.TINY.replace(mr_dropout=0.2, **changes)
    torch.manual_seed(0)
    net = config.net.build()
    with torch.no_grad():
        net.out_conv.weight.normal_(0, 0.05)
        net.input_conv.weight.normal_(0, 0.2)
    return DDIP(config, net)


def test_round_trip_through_ddip_gives_the_same_reconstruction():
    """image model -> DDIP.from_petdds -> PETDDS.from_ddip: the network, schedule and prediction
    survive, so with the same settings the reconstruction is the same image."""
    act, mr, model, y = _scan("fdg", 3e4)
    original = _untrained_petdds()
    again = PETDDS.from_ddip(DDIP.from_petdds(original), original.config)
    assert again.config == original.config and again.prediction == original.prediction
    assert not again.conditional
    torch.testing.assert_close(torch.as_tensor(again.reconstruct(model, y, seed=3)),
                               torch.as_tensor(original.reconstruct(model, y, seed=3)))


def test_mr_guided_petdds_on_an_mr_dropout_ddip(tmp_path):
    act, mr, model, y = _scan("fdg", 3e4)
    other = _scan("fdg", 3e4, seed=2024)[1]
    ddip = _robust_ddip()
    cfg = PETDDSConfig(reference_mean=0.3, steps=3, em_iterations=1)
    guided = PETDDS.from_ddip(ddip, cfg)
    assert guided.conditional and guided.config.image_size == tuple(ddip.config.net.image_size)
    a = torch.as_tensor(guided.reconstruct(model, y, mr=mr, seed=1))
    b = torch.as_tensor(guided.reconstruct(model, y, mr=other, seed=1))
    assert bool((a >= 0).all()) and bool(torch.isfinite(a).all())
    assert not torch.allclose(a, b)                                    # the MR guides
    free = PETDDS.from_ddip(ddip, cfg.replace(guidance=0.0))
    torch.testing.assert_close(torch.as_tensor(free.reconstruct(model, y, mr=mr, seed=1)),
                               torch.as_tensor(free.reconstruct(model, y, mr=other, seed=1)))
    with pytest.raises(ValueError, match="MR-conditioned"):
        guided.reconstruct(model, y, seed=1)
    # saved and loaded as a PET-DDS model
    loaded = PETDDS.load(guided.save(tmp_path / "pet-dds-mr.safetensors"))
    assert loaded.conditional and loaded.config == guided.config
    torch.testing.assert_close(torch.as_tensor(loaded.reconstruct(model, y, mr=mr, seed=1)), a)


def test_reference_mean_is_measured_on_ddip_normalised_training_images(tmp_path):
    build_dataset(tmp_path / "data", DATA, progress=False)
    ddip = _robust_ddip()
    prior = PETDDS.from_ddip(ddip, PETDDSConfig(mask_threshold=0.2), dataset=tmp_path / "data")
    levels = []                                  # by hand, with numpy
    for s in range(3):
        truth = np.load(tmp_path / "data" / f"subject_{s:03d}" / "truth.npy").astype(np.float64)
        mrs = np.load(tmp_path / "data" / f"subject_{s:03d}" / "mr.npy").astype(np.float64)
        for t, m in zip(truth, mrs):
            head = m > ddip.config.mask_threshold * m.max()
            img = t / (t[head].mean() / ddip.config.target_mean)      # DDIP: head mean = target_mean
            flat = np.sort(img.ravel())
            q99 = flat[int(np.ceil(0.99 * flat.size)) - 1]
            levels.append(img[img > 0.2 * q99].mean())
    assert len(levels) == 9
    assert prior.config.reference_mean == pytest.approx(float(np.median(levels)), rel=1e-5)


def test_from_ddip_input_checks():
    with pytest.raises(TypeError, match="must be a DDIP prior"):
        PETDDS.from_ddip(_untrained_petdds())
    with pytest.raises(ValueError, match="reference_mean or dataset"):
        PETDDS.from_ddip(_robust_ddip())
    with pytest.raises(ValueError, match="without MR dropout"):
        PETDDS.from_ddip(DDIP(DDIPConfig.TINY), PETDDSConfig(reference_mean=0.3))
    slab = DDIPConfig.TINY.replace(net=DDIPConfig.TINY.net.replace(in_channels=3, out_channels=3, cond_channels=3))
    with pytest.raises(ValueError, match="single slices"):
        PETDDS.from_ddip(DDIP(slab), PETDDSConfig(reference_mean=0.3))
    with pytest.raises(TypeError, match="PETDDSConfig"):
        PETDDS.from_ddip(_robust_ddip(), {"reference_mean": 0.3})
