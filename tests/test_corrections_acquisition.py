"""A raw PETSIRD acquisition end to end: randoms from the delayeds, scatter by SSS + tail fit, OSEM.

The file is simulated with known expected trues, scatter and randoms (pettk.corrections.simulate):
the scanner is the 12-gon of tests/test_petsird.py (48 crystals × 4 rings, radius 60 mm) written with
petsird's generator, with a 350-650 keV window; a water ellipse (30 × 24 mm) holding a warm ellipse
and a hot rod; scatter = 1.5 × the all-crystal, all-voxel single scatter (within 1 % of the
brute-force integral of tests/_scatter_brute_force.py on this scanner: 0.990-1.004 per bin),
randoms ``2 tau S_i S_j T`` from known singles on the LORs in coincidence. Prompts and an
independent delayed realisation are Poisson and written as PETSIRD events.

The pipeline sees only the file and the mu-map; its randoms and scatter are compared with the
simulation's expected values, its image with the true activity (in the model's count units).
"""

import json
import sys

import numpy as np
import pytest

import pettk

petsird = pytest.importorskip("petsird")
pytest.importorskip("petsird.helpers.generator")
from test_petsird import ring_header  # noqa: E402

from pettk.corrections.acquisition import estimate_corrections, report_lines  # noqa: E402
from pettk.corrections.simulate import simulate_acquisition  # noqa: E402
from pettk.io import save_nifti  # noqa: E402
from pettk.io.petsird import PETSIRDScanner, write_petsird  # noqa: E402
from pettk.physics import ForwardModel  # noqa: E402
from pettk.recon import osem  # noqa: E402
from pettk.scatter import EnergyWindow  # noqa: E402

TAU, DURATION = 4e-9, 1.0
OSEM = dict(n_iter=6, n_subsets=4)


def header_with_window(lower=350.0, upper=650.0):
    header = ring_header()
    header.scanner.event_energy_bin_edges[0].edges = np.array([lower, upper], dtype=np.float32)
    for pair in header.scanner.detection_efficiencies.module_pair_efficiencies_vectors[0][0]:
        pair.values = [[1.0] * len(row) for row in pair.values]  # every module pair in coincidence: 1
    return header


def phantom(grid):
    x, y, _ = grid.coordinates()
    mu = np.where(x ** 2 + (y / 0.8) ** 2 < 30.0 ** 2, 0.0096, 0.0)
    activity = np.where(x ** 2 + (y / 0.8) ** 2 < 26.0 ** 2, 1.0, 0.0)
    activity[(x - 8.0) ** 2 + y ** 2 < 7.0 ** 2] = 4.0
    return activity, mu


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory):
    header = header_with_window()
    scanner = PETSIRDScanner(header)
    grid = scanner.default_grid()
    activity, mu = phantom(grid)
    polygon = scanner.regular_polygon()[0]
    singles = np.random.default_rng(0).uniform(0.5, 1.5, (polygon.n_rings, polygon.n_crystals_per_ring)) * 7e3
    path = tmp_path_factory.mktemp("acquisition") / "scan.petsird"
    sim = simulate_acquisition(path, header, activity, mu, grid, trues=1.2e5, singles_per_s=singles, tau_s=TAU,
                               duration_s=DURATION, scatter_scale=1.5, window=EnergyWindow(350, 650, 0.1), seed=2)
    return dict(sim=sim, grid=grid, activity=activity, mu=mu, header=header)


def test_pipeline_recovers_randoms_and_scatter_and_corrects_the_image(acquisition):
    a = acquisition
    sim, grid = a["sim"], a["grid"]
    # scatter points every 8 mm: the default 15 mm blocks leave ~4 × 3 points per slice of this 60 mm
    # object, whose coarse SSS puts 8 % too much of the scatter in the tails (measured: -11 % scatter)
    res = estimate_corrections(sim.path, a["mu"], n_rounds=3, tail_margin=1, sss_options={"scatter_step_mm": 8.0},
                               **OSEM)
    np.testing.assert_array_equal(res.prompts.numpy(), sim.prompts)
    np.testing.assert_array_equal(res.delayeds.numpy(), sim.delayeds)
    np.testing.assert_allclose(res.normalisation.numpy(), sim.efficiency, rtol=1e-6)
    prompts = sim.prompts.sum()
    true_rf, true_sf = sim.randoms.sum() / prompts, sim.scatter.sum() / prompts
    rep = res.report
    # randoms: the estimate's total is the delayeds' (Poisson, ~7100: sd 1.2 %); 3 sd
    assert rep["randoms_fraction"] == pytest.approx(true_rf, rel=0.036)
    # the fan-sum estimate follows the expected randoms bin by bin far better than the delayeds
    measurable = sim.efficiency > 0
    err_est = np.mean((res.randoms.numpy() - sim.randoms)[measurable] ** 2)
    err_raw = np.mean((sim.delayeds - sim.randoms)[measurable] ** 2)
    assert err_est < 0.1 * err_raw
    # scatter: the sd of the tail scale from the Fisher information of the tail bins is 3.6 %
    # (Poisson) and 0.8 % (the randoms total); 3 sd, the coarse SSS's shape error taken in by the scale
    assert rep["scatter_fraction"] == pytest.approx(true_sf, rel=0.11)
    assert len(rep["tail_scales"]) == 3 and rep["tail_scales"][-1] == pytest.approx(1.5, rel=0.15)
    assert rep["energy_window_kev"] == [350.0, 650.0] and rep["fwhm_fraction"] == pytest.approx(0.1)
    lines = report_lines(rep)
    assert any("randoms" in line and "% of the prompts" in line for line in lines)
    # the corrected image is closer to the truth than the one without randoms and scatter
    truth = sim.count_scale * a["activity"]
    body = a["mu"] > 0
    plain = osem(ForwardModel(pettk.Projector(grid, res.layout), normalisation=res.normalisation,
                              attenuation=res.attenuation), res.prompts, OSEM["n_iter"], OSEM["n_subsets"])

    def nrmse(img):
        return float(np.linalg.norm((img - truth)[body]) / np.linalg.norm(truth[body]))

    def bias(img):
        return float(img[body].mean() / truth[body].mean() - 1.0)

    corrected, uncorrected = res.image.numpy(), plain.numpy()
    assert nrmse(corrected) < nrmse(uncorrected) - 0.01
    assert abs(bias(corrected)) < 0.03 < 0.08 < bias(uncorrected)
    outside = ~body
    assert corrected[outside].mean() < 0.5 * uncorrected[outside].mean()


def test_cli_estimate_corrections(acquisition, tmp_path, capsys):
    from pettk.cli import main

    a = acquisition
    sim, grid = a["sim"], a["grid"]
    mu_path = save_nifti(tmp_path / "mu.nii.gz", a["mu"].astype(np.float32), grid)
    out = tmp_path / "image.nii.gz"
    assert main(["recon", "--petsird", str(sim.path), "--estimate-corrections", "--mu", str(mu_path), "-o", str(out),
                 "--scatter-rounds", "2", "--scatter-step", "8", "--iterations", "3", "--subsets", "4",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "% of the prompts" in printed and "image.corrections.json" in printed
    report = json.loads((tmp_path / "image.corrections.json").read_text())
    prompts = sim.prompts.sum()
    assert report["randoms_fraction"] == pytest.approx(sim.randoms.sum() / prompts, rel=0.036)
    assert report["scatter_fraction"] == pytest.approx(sim.scatter.sum() / prompts, rel=0.15)  # 2 rounds only
    assert report["scatter_rounds"] == 2 and len(report["tail_scales"]) == 2
    image, image_grid = pettk.io.load_nifti(out)
    assert image.shape == grid.shape and np.isfinite(image).all() and image.max() > 0
    # bad input: exits with a message, nothing written
    shifted = pettk.ImageGrid(grid.shape, grid.voxel_size_mm, tuple(o + 4.0 for o in grid.origin_mm))
    other = save_nifti(tmp_path / "mu_other.nii.gz", a["mu"].astype(np.float32), shifted)
    bad = tmp_path / "bad.nii.gz"
    with pytest.raises(SystemExit, match="reconstruction grid"):
        main(["recon", "--petsird", str(sim.path), "--estimate-corrections", "--mu", str(other), "-o", str(bad)])
    with pytest.raises(SystemExit, match="needs --estimate-corrections"):
        main(["recon", "--petsird", str(sim.path), "--mu", str(mu_path), "-o", str(bad)])
    assert not bad.exists() and not (tmp_path / "bad.corrections.json").exists()


def test_bad_input_raises_before_work(acquisition, tmp_path):
    a = acquisition
    sim, mu = a["sim"], a["mu"]
    empty = {(0, 0): (np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64))}
    one = {(0, 0): (np.array([[40, 3]]), np.array([4]))}
    no_delayeds = write_petsird(tmp_path / "prompts_only.bin", a["header"], one)
    with pytest.raises(ValueError, match="no delayed coincidences"):
        estimate_corrections(no_delayeds, mu)
    low = write_petsird(tmp_path / "low_window.bin", header_with_window(250.0, 650.0), empty, delayed_events=one)
    with pytest.raises(ValueError, match="350"):
        estimate_corrections(low, mu)
    with pytest.raises(ValueError, match="1/cm"):
        estimate_corrections(sim.path, mu * 10)
    with pytest.raises(ValueError, match="shape"):
        estimate_corrections(sim.path, mu[:-1])
    with pytest.raises(ValueError, match="normalisation must have shape"):
        estimate_corrections(sim.path, mu, normalisation=np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="n_subsets"):
        estimate_corrections(sim.path, mu, n_subsets=1000)
    with pytest.raises(FileNotFoundError):
        estimate_corrections(tmp_path / "missing.bin", mu)


def test_without_mu_only_randoms_are_corrected(acquisition):
    sim = acquisition["sim"]
    res = estimate_corrections(sim.path, None, n_iter=1, n_subsets=4)
    assert res.report["scatter_fraction"] is None and res.attenuation is None
    assert float(res.scatter.sum()) == 0.0
    assert res.report["randoms_fraction"] == pytest.approx(sim.randoms.sum() / sim.prompts.sum(), rel=0.036)
    assert any("not estimated" in line for line in report_lines(res.report))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
