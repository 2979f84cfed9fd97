"""Progress bars of the long 3D steps (attenuation factors, sensitivity, the subsets of an epoch)
give the same numbers as the silent path and stay off by default; ``simulate_scan`` and the
attenuation factors keep few sinogram copies (peak memory measured in a subprocess)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import pettk
from pettk.physics import ForwardModel, attenuation_factors
from pettk.recon import osem
from pettk.recon._common import run, subset_progress
from pettk.sim.scan import simulate_scan


@pytest.fixture
def tiny3d():
    p = pettk.preset("tiny")
    rng = np.random.default_rng(3)
    mu = np.zeros(p.grid.shape)
    mu[8:24, 8:24, :] = 0.0096
    x = np.zeros(p.grid.shape)
    x[10:22, 9:20, 1:7] = rng.uniform(0.5, 1.5, (12, 11, 6))
    return pettk.Projector(p.grid, p.layout), mu, x


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_attenuation_factors_in_blocks_equal_one_call(tiny3d, as_tensor, dtype, capsys):
    P, mu, _ = tiny3d
    mu = mu.astype(dtype)
    if as_tensor:
        mu = torch.from_numpy(mu)
    one = attenuation_factors(P, mu)
    assert "attenuation factors" not in capsys.readouterr().err  # silent by default
    blocked = attenuation_factors(P, mu, progress=True)
    assert "attenuation factors" in capsys.readouterr().err
    assert type(blocked) is type(one) and blocked.dtype == one.dtype and blocked.shape == one.shape
    np.testing.assert_array_equal(np.asarray(blocked), np.asarray(one))
    ref = np.exp(-np.asarray(P.forward(mu)))
    np.testing.assert_allclose(np.asarray(one), ref, rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert float(np.asarray(one).min()) < 0.9  # the mu-map attenuates


def test_attenuation_factors_progress_keeps_autograd(tiny3d):
    P, mu, _ = tiny3d
    mu_t = torch.from_numpy(mu).requires_grad_(True)
    f = attenuation_factors(P, mu_t, progress=True)  # one call: the blocked path has no autograd
    f.sum().backward()
    assert mu_t.grad is not None and float(mu_t.grad.abs().sum()) > 0


def test_forward_model_mu_progress_same_model(tiny3d):
    P, mu, x = tiny3d
    a = ForwardModel(P, psf=3.0, mu=mu)
    b = ForwardModel(P, psf=3.0, mu=mu, progress=True)
    assert torch.equal(a.mult, b.mult)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_osem_progress_shows_sensitivity_and_subsets_and_changes_nothing(tiny3d, capsys):
    P, mu, x = tiny3d
    model = ForwardModel(P, mu=mu, additive=np.full(P.shape_out, 0.05))
    y = torch.poisson(model.forward(torch.from_numpy(x)) * 20, generator=torch.Generator().manual_seed(0)) / 20
    silent = osem(ForwardModel(P, mu=mu, additive=np.full(P.shape_out, 0.05)), y, 2, 4)
    assert capsys.readouterr().err == ""
    shown = osem(model, y, 2, 4, progress=True)
    err = capsys.readouterr().err
    assert "sensitivity" in err and "OSEM(4) subsets" in err and "OSEM(4)" in err
    assert torch.equal(shown, silent)
    # a second call: the sensitivities are cached, no sensitivity bar
    osem(model, y, 1, 4, progress=True)
    assert "sensitivity" not in capsys.readouterr().err


def test_subset_progress_outside_and_inside_a_run(capsys):
    assert list(subset_progress([3, 1, 2])) == [3, 1, 2]
    assert capsys.readouterr().err == ""
    from pettk.recon._common import ReconState

    seen = []

    def states():
        for it in range(2):
            seen.extend(subset_progress(iter([0, 2, 1])))
            yield ReconState(it + 1, torch.zeros(1))

    run(states(), 2, progress=True, desc="ALG")
    assert seen == [0, 2, 1, 0, 2, 1]
    assert "ALG subsets" in capsys.readouterr().err


def test_simulate_scan_progress_same_scan(tiny3d, capsys):
    P, mu, x = tiny3d
    model = ForwardModel(P, psf=3.0, mu=mu.astype(np.float32))
    silent = simulate_scan(x, model, 1e5, 0.1, 0.3, seed=4)
    assert capsys.readouterr().err == ""
    shown = simulate_scan(x, model, 1e5, 0.1, 0.3, seed=4, progress=True)
    assert "projection" in capsys.readouterr().err
    for name in ("prompts", "trues", "scatter", "randoms"):
        assert torch.equal(getattr(shown, name), getattr(silent, name)), name
    assert torch.equal(shown.model.mult, silent.model.mult)


def test_scan_expected_is_the_sum_of_its_parts():
    grid = pettk.ImageGrid((20, 20), 2.0)
    P = pettk.Projector(grid, pettk.ParallelBeam2D(20, 29, 1.5))
    phantom = np.zeros(grid.shape)
    phantom[5:15, 5:15] = 1.0
    scan = simulate_scan(phantom, ForwardModel(P), 2e4, randoms_fraction=0.2, scatter_fraction=0.2, seed=0)
    torch.testing.assert_close(scan.expected, scan.trues + scan.scatter + scan.randoms, rtol=1e-15, atol=0)
    assert scan.model.additive is not scan.scatter  # the background is one extra sinogram, shared by the model
    assert float(scan.expected.sum()) == pytest.approx(2e4, rel=1e-12)


_PROBE = textwrap.dedent("""
    import gc, json, sys
    import numpy as np, torch
    import pettk
    from pettk.sim.scan import simulate_scan

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))

    def reset():
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmRSS:")

    rings = (np.arange(16) - 7.5) * 4.0625
    layout = pettk.SinogramLayout(pettk.RegularPolygonScanner(330.0, 56, 8, 4.0, rings), radial_trim=160)
    grid = pettk.ImageGrid((64, 64, 31), (4.17, 4.17, 2.03125))
    P = pettk.Projector(grid, layout)
    mu = np.zeros(grid.shape, dtype=np.float32)
    mu[12:52, 12:52, :] = 0.0096
    x = np.zeros(grid.shape)
    x[16:48, 20:44, 4:27] = 1.0
    # warm-up (kernels compiled, filters loaded) on the same shapes
    simulate_scan(x, pettk.ForwardModel(P, mu=mu), 1e6, 0.1, 0.3, seed=0)
    sino64_kb = np.prod(layout.shape) * 8 / 1024

    before = reset()
    model = pettk.ForwardModel(P, mu=mu, progress=sys.argv[1] == "blocks")
    attenuation_kb = status("VmHWM:") - before
    before = reset()
    scan = simulate_scan(x, model, 1e6, 0.1, 0.3, seed=0)
    simulate_kb = status("VmHWM:") - before
    print(json.dumps({"attenuation": attenuation_kb / sino64_kb, "simulate": simulate_kb / sino64_kb}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("path", ["one call", "blocks"])
def test_peak_memory_of_attenuation_and_simulate_scan(path):
    """16 rings of the mmr-like scanner (256 planes × 224 × 129: a 59 MB float64 sinogram), a
    float32 mu-map. In float64 sinograms: the attenuation factors are half of one (the
    exponential is taken in place, the projector returns its kernel's output without a copy);
    simulate_scan keeps trues, scatter, randoms, their sum (the model's additive), the prompts
    and the scaled float32 mult (5.5) and needs no more at its peak. Before, it also stored
    ``expected`` and its peak rose by about 7.4."""
    # a fixed mmap threshold: freed sinograms and blocks go back to the system at once, so the
    # peaks are those of the live tensors (glibc's heap would otherwise reuse the warm-up's)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    run = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["attenuation"] < 0.75, result  # measured 0.51 (one call), 0.55 (blocks); before: 1.5
    assert result["simulate"] < 6.0, result  # measured 5.5; before: 7.4
