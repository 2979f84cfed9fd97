"""The shipped 128² models on the 3D section of ``pettk evaluate --3d`` (issue 23).

The acceptance section (16 rings of the mmr-like scanner, 128 × 128 × 32 voxels) has the shipped
128² models' training grid (128 × 128 of 2.0863 mm) and their training sinograms as planes
(224 views × 129 bins, the mmr-like direct plane); a model of another grid or sinogram is refused
before anything is simulated.
"""

import numpy as np
import pytest
import torch

import pettk
from pettk import models
from pettk.evaluation.volumes import VolumeData, check_models_fit, evaluate_volumes, section_geometry
from pettk.geometry import ImageGrid
from pettk.physics import ForwardModel
from pettk.projector import Projector
from pettk.sim.datasets import DatasetConfig


@pytest.fixture(scope="module")
def shipped():
    return {"ddip": models.load("ddip-fdg-128"), "pet-dds": models.load("pet-dds-mr"),
            "dream": models.load("dream-drf20-128")}


def test_the_acceptance_section_is_the_128_models_training_grid_and_plane():
    layout, grid = section_geometry(VolumeData())
    training = DatasetConfig()                            # the data set of the shipped 128² models
    assert training.image_size == 128 and training.geometry == "mmr-like"
    assert grid.shape[:2] == (128, 128) == training.grid().shape
    assert grid.voxel_size_mm[:2] == pytest.approx(training.grid().voxel_size_mm, rel=1e-9)
    assert grid.voxel_size_mm == pytest.approx((2.0863, 2.0863, 2.03125))
    assert layout.shape == (256, 224, 129) and layout.shape[1:] == training.make_geometry().shape == (224, 129)


def test_a_direct_plane_of_the_section_is_the_2d_training_sinogram():
    """Same views and radial bins, not only the same shape: an axially uniform object projects in a
    direct plane of the 3D section as in the 2D mmr-like geometry the restorers were trained on."""
    layout, grid3 = section_geometry(VolumeData(rings=2, shape=(128, 128, 4)))
    grid2 = ImageGrid((128, 128), grid3.voxel_size_mm[:2])
    xx, yy = np.meshgrid(grid2.voxel_centres(0), grid2.voxel_centres(1), indexing="ij")
    disc = (((xx - 20.0) / 70.0) ** 2 + ((yy + 10.0) / 55.0) ** 2 <= 1.0).astype(np.float32)
    disc += 2.0 * ((xx + 30.0) ** 2 + (yy - 5.0) ** 2 <= 15.0 ** 2)
    y3 = Projector(grid3, layout).forward(np.repeat(disc[:, :, None], 4, axis=2))
    y2 = Projector(grid2, pettk.preset("mmr-like").layout_2d).forward(disc)
    direct = [k for k, (a, b) in enumerate(layout.plane_rings) if a == b]
    assert len(direct) == 2 and y2.shape == y3.shape[1:] == (224, 129)
    for k in direct:
        assert float(np.abs(y3[k] - y2).max()) <= 1e-4 * float(y2.max())


def test_the_shipped_128_models_fit_and_the_64_models_are_refused(shipped):
    layout, grid = section_geometry(VolumeData())
    check_models_fit(shipped, layout, grid)                                  # accepted: no error
    with pytest.raises(ValueError, match=r"the ddip model was trained on 64 x 64 slices of 4\.173 mm but the "
                                         r"volume's slices are 128 x 128 of 2\.086 x 2\.086 mm"):
        check_models_fit({"ddip": models.load("ddip-fdg")}, layout, grid)
    dream64 = models.load("dream-drf20")
    assert tuple(dream64.sinogram_shape) != (224, 129)
    with pytest.raises(ValueError, match=r"the dream model was trained on \d+ x \d+ sinograms but the section's "
                                         r"planes are 224 x 129"):
        check_models_fit({"dream": dream64}, layout, grid)


def test_a_128_model_on_a_grid_of_other_voxels_is_refused(shipped):
    # 128 x 128 but 1.5 mm voxels: the shape fits, the voxels do not (the model saw 2.0863 mm)
    layout, grid = section_geometry(VolumeData(voxel_size_mm=(1.5, 1.5, 2.03125)))
    with pytest.raises(ValueError, match=r"the pet-dds model was trained on 128 x 128 slices of 2\.086 mm but the "
                                         r"volume's slices are 128 x 128 of 1\.5 x 1\.5 mm"):
        check_models_fit({"pet-dds": shipped["pet-dds"]}, layout, grid)
    # 64 x 64 of the preset's 2.0863 mm (half the field of view): the 128² model does not fit
    layout, grid = section_geometry(VolumeData(shape=(64, 64, 8)))
    with pytest.raises(ValueError, match=r"the ddip model was trained on 128 x 128 slices"):
        check_models_fit({"ddip": shipped["ddip"]}, layout, grid)


def test_evaluate_volumes_refuses_a_mismatched_model_before_simulating(tmp_path, monkeypatch, shipped):
    import pettk.evaluation.volumes as volumes

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated a volume before checking the models")

    monkeypatch.setattr(volumes, "simulate_volume", no_simulation)
    with pytest.raises(ValueError, match="the ddip model was trained on 64 x 64 slices"):
        evaluate_volumes(tmp_path, ("osem", "ddip"), VolumeData(subjects=1), models={"ddip": models.load("ddip-fdg")},
                         progress=False)
    # the fitting models pass the check and reach the simulation
    with pytest.raises(AssertionError, match="simulated a volume"):
        evaluate_volumes(tmp_path, ("osem", "ddip", "dream"), VolumeData(subjects=1),
                         models={"ddip": shipped["ddip"], "dream": shipped["dream"]}, progress=False)


def test_cli_evaluate_3d_refuses_the_64_model(tmp_path):
    from pettk.cli import main

    with pytest.raises(SystemExit, match="pettk evaluate: the ddip model was trained on 64 x 64 slices"):
        main(["evaluate", "--3d", "-o", str(tmp_path / "ev"), "--methods", "osem", "ddip", "--checkpoint",
              "ddip=ddip-fdg", "--no-progress"])
    assert not (tmp_path / "ev" / "metrics.md").exists()


def test_dream_restores_a_3d_plane_at_the_planes_count_level(shipped):
    """The restorer's input normalisation (each plane divided by its own maximum of DRF · y) makes
    the restored plane follow the plane's counts: twice the counts, twice the restored counts."""
    layout, grid3 = section_geometry(VolumeData(rings=2, shape=(128, 128, 4)))
    grid2 = ImageGrid((128, 128), grid3.voxel_size_mm[:2])
    xx, yy = np.meshgrid(grid2.voxel_centres(0), grid2.voxel_centres(1), indexing="ij")
    head = ((xx / 75.0) ** 2 + (yy / 90.0) ** 2 <= 1.0).astype(np.float32)
    ybar = ForwardModel(Projector(grid2, pettk.preset("mmr-like").layout_2d)).forward(torch.from_numpy(head))
    ybar = ybar * (6e3 / float(ybar.sum()))            # a DRF-20 plane of the acceptance case: ~6e3 counts
    y = torch.poisson(ybar, generator=torch.Generator().manual_seed(0))
    dream = shipped["dream"]
    one = dream.restore(y, 20.0)
    two = dream.restore(2 * y, 20.0)
    assert float(one.sum()) == pytest.approx(20.0 * float(y.sum()), rel=0.05)
    assert float(two.sum()) == pytest.approx(2 * float(one.sum()), rel=1e-4)
