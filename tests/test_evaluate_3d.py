"""3D evaluation (pettk.evaluation.volumes, pettk evaluate --3d) and the axial gradient error."""

import csv

import numpy as np
import pytest

from pettk.evaluation.volumes import VolumeData, evaluate_volumes, section_geometry, simulate_volume, volume_metrics
from pettk.metrics import axial_gradient_error

#: A small section: 2 rings of the mmr-like scanner (4 planes), 64 × 64 × 4 voxels of 4.17 mm.
SMALL = VolumeData(subjects=2, validation_subjects=1, rings=2, shape=(64, 64, 4),
                   voxel_size_mm=(4.1726, 4.1726, 2.03125), counts=3e5, lesions=1, z_offset_mm=5.0)


def test_axial_gradient_error_by_hand():
    ref = np.zeros((1, 1, 4))
    ref[..., :] = [0.0, 1.0, 3.0, 3.0]                     # axial differences 1, 2, 0
    x = np.zeros((1, 1, 4))
    x[..., :] = [0.0, 2.0, 3.0, 4.0]                       # differences 2, 1, 1 -> errors 1, -1, 1
    assert axial_gradient_error(x, ref) == pytest.approx(np.sqrt(3) / np.sqrt(5))
    assert axial_gradient_error(ref + 7.0, ref) == 0.0     # an offset has the truth's axial structure
    mask = np.ones((1, 1, 4), bool)
    mask[..., 3] = False                                   # only the pairs (0,1), (1,2): errors 1, -1 over 1, 2
    assert axial_gradient_error(x, ref, mask) == pytest.approx(np.sqrt(2) / np.sqrt(5))
    with pytest.raises(ValueError, match="needs 3D volumes"):
        axial_gradient_error(np.ones((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="no axial variation"):
        axial_gradient_error(x, np.ones((1, 1, 4)))


def test_section_geometry_of_the_acceptance_case():
    layout, grid = section_geometry(VolumeData())
    assert layout.shape == (256, 224, 129) and grid.shape == (128, 128, 32)
    assert grid.voxel_size_mm == pytest.approx((2.0863, 2.0863, 2.03125))
    z = layout.scanner.ring_positions_mm
    assert len(z) == 16 and np.mean(z) == pytest.approx(0.0) and np.diff(z) == pytest.approx(4.0625)
    with pytest.raises(ValueError, match="at most the mmr-like scanner's 64"):
        section_geometry(VolumeData(rings=65))


def test_volume_metrics_of_the_truth_and_of_a_blurred_truth():
    layout, grid = section_geometry(SMALL)
    case = simulate_volume(SMALL, 7, layout, grid)
    perfect, lesions = volume_metrics(case.truth, case)
    assert perfect["psnr"] == np.inf or perfect["psnr"] > 100
    assert perfect["nrmse"] == 0.0 and perfect["ssim"] == pytest.approx(1.0) and perfect["axial"] == 0.0
    assert all(row["cr"] == pytest.approx(1.0) for row in lesions if not row["skipped"])
    flat = case.truth.mean(dim=-1, keepdim=True).expand_as(case.truth)   # axial structure removed
    blurred, _ = volume_metrics(flat, case)
    assert blurred["axial"] == pytest.approx(1.0) and blurred["nrmse"] > 0


def test_evaluate_volumes_tunes_and_reports(tmp_path):
    grid = {"osem_iterations": (1, 2), "post_filter_mm": (0.0, 6.0), "bsrem_beta": (0.3, 3.0), "rdp_gamma": (2.0,),
            "extend": 0}
    summary = evaluate_volumes(tmp_path, ("osem", "bsrem-rdp"), SMALL, tune_grid=grid, bsrem_max_epochs=10,
                               progress=False)
    assert [e["method"] for e in summary] == ["osem", "bsrem-rdp"] and all(e["n"] == 2 for e in summary)
    assert all(e["n_hot"] + e["n_cold"] >= 1 for e in summary)          # the lesions are measured in 3D
    assert all(np.isfinite(e["psnr"]) and 0 < e["axial"] for e in summary)
    table = (tmp_path / "metrics.md").read_text()
    assert "axial grad. error" in table and "s / volume" in table and "2-ring section" in table
    rows = list(csv.DictReader((tmp_path / "volumes.csv").open()))
    assert len(rows) == 4 and rows[0]["slice"] == "all" and float(rows[0]["axial"]) > 0
    assert (tmp_path / "lesions.csv").is_file() and (tmp_path / "tuning.json").is_file()
    with pytest.raises(ValueError, match="need their models"):
        evaluate_volumes(tmp_path, ("osem", "red"), SMALL, progress=False)


def test_cli_evaluate_3d(tmp_path, capsys):
    from pettk.cli import main

    out = tmp_path / "ev3d"
    assert main(["evaluate", "--3d", "-o", str(out), "--methods", "osem", "--subjects", "1", "--rings", "2",
                 "--volume-shape", "96", "96", "4", "--validation-subjects", "1", "--tune-osem-iterations", "1", "2",
                 "--tune-filter-mm", "0", "4", "--tune-extend", "0", "--no-progress"]) == 0
    assert "| OSEM + filter | 20 | fdg | 1 |" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "volumes.csv").open()))
    assert [r["method"] for r in rows] == ["osem"]
    with pytest.raises(SystemExit, match="--3d simulates its own FDG volumes; drop --slices"):
        main(["evaluate", "--3d", "-o", str(out), "--slices", "2"])
    with pytest.raises(SystemExit, match="one --drf"):
        main(["evaluate", "--3d", "-o", str(out), "--drf", "4", "20"])
