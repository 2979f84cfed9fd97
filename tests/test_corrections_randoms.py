"""Randoms from singles and from delayeds (fan sums) against a Monte Carlo of uncorrelated singles.

The reference is a time-stamped simulation: every crystal fires as a Poisson process of known rate
and the randoms are the pairs of singles closer in time than tau (a window of width 2 tau). The
expected number of such pairs is exactly ``2 tau S_i S_j T``; pettk's estimates are compared with
the simulated counts, not with its own formula.
"""

import numpy as np
import pytest
import torch

import pettk
from pettk.corrections import (
    compress,
    event_randoms,
    fan_sum_factors,
    histogram_crystal_pairs,
    randoms_from_delayeds,
    randoms_from_singles,
)

TAU = 4e-9        # s
DURATION = 1.0    # s


def _singles_rates(scanner, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, (scanner.n_rings, scanner.n_crystals_per_ring)) * 2e4  # 1/s


def _monte_carlo(rates, seed):
    """Singles as Poisson processes over [0, DURATION]; returns (singles counts per crystal, crystal
    pairs (n, 2) of all pairs of singles within |dt| < TAU)."""
    rng = np.random.default_rng(seed)
    flat = rates.reshape(-1)
    counts = rng.poisson(flat * DURATION)
    crystal = np.repeat(np.arange(flat.size), counts)
    times = rng.uniform(0.0, DURATION, crystal.size)
    order = np.argsort(times)
    t, c = times[order], crystal[order]
    pairs = []
    k = 1
    while True:
        close = (t[k:] - t[:-k]) < TAU
        if not close.any():
            break
        idx = np.flatnonzero(close)
        pairs.append(np.stack([c[idx], c[idx + k]], axis=1))
        k += 1
    return counts.reshape(rates.shape), np.concatenate(pairs)


@pytest.fixture(scope="module")
def simulation():
    pre = pettk.preset("tiny")
    layout = pre.layout
    rates = _singles_rates(pre.scanner)
    singles_counts, prompt_pairs = _monte_carlo(rates, seed=1)
    _, delayed_pairs = _monte_carlo(rates, seed=2)
    return dict(layout=layout, rates=rates, singles=singles_counts / DURATION,
                true_randoms=histogram_crystal_pairs(prompt_pairs, layout),
                delayeds=histogram_crystal_pairs(delayed_pairs, layout),
                expected=_brute_force_expected(rates, layout))


def _brute_force_expected(rates, layout):
    out = np.zeros(layout.shape)
    for p, (r0, r1) in enumerate(layout.plane_rings):
        a, b = layout.crystal_pairs[..., 0], layout.crystal_pairs[..., 1]
        out[p] = 2 * TAU * DURATION * rates[r0, a] * rates[r1, b]
    return out


def test_singles_formula_matches_brute_force(simulation):
    s = simulation
    est = randoms_from_singles(s["rates"], TAU, DURATION, s["layout"])
    np.testing.assert_allclose(est, s["expected"], rtol=1e-12)


def test_randoms_from_measured_singles_match_simulated_randoms(simulation):
    s = simulation
    true_total = s["true_randoms"].sum()
    assert true_total > 2e4
    est = randoms_from_singles(s["singles"], TAU, DURATION, s["layout"])
    assert abs(est.sum() / true_total - 1) < 0.02


def test_randoms_from_delayeds_match_simulated_randoms_with_less_variance(simulation):
    s = simulation
    est = randoms_from_delayeds(s["delayeds"], s["layout"])
    assert abs(est.sum() / s["true_randoms"].sum() - 1) < 0.02
    assert est.sum() == pytest.approx(s["delayeds"].sum(), rel=1e-9)
    truth = s["expected"]
    mse_raw = np.mean((s["delayeds"] - truth) ** 2)
    mse_fan = np.mean((est - truth) ** 2)
    assert mse_fan < 0.05 * mse_raw
    # the factors estimate the singles rates: s_i = sqrt(2 tau T) S_i
    f = fan_sum_factors(s["delayeds"], s["layout"])
    rates = f / np.sqrt(2 * TAU * DURATION)
    assert np.corrcoef(rates.ravel(), s["rates"].ravel())[0, 1] > 0.9


def test_fan_sum_fit_is_exact_on_noiseless_data(simulation):
    s = simulation
    est = randoms_from_delayeds(torch.from_numpy(s["expected"]), s["layout"])
    assert isinstance(est, torch.Tensor)
    np.testing.assert_allclose(est.numpy(), s["expected"], rtol=1e-6)


def test_list_mode_events_get_their_bins_randoms(simulation):
    s = simulation
    layout = s["layout"]
    rng = np.random.default_rng(3)
    p, v, r = (rng.integers(0, n, 50) for n in layout.shape)
    n = layout.scanner.n_crystals_per_ring
    a, b = layout.crystal_pairs[v, r, 0], layout.crystal_pairs[v, r, 1]
    crystals = np.stack([layout.plane_rings[p, 0] * n + a, layout.plane_rings[p, 1] * n + b], axis=1)
    sino = randoms_from_singles(s["rates"], TAU, DURATION, layout)
    per_event = event_randoms(s["rates"], crystals[:, ::-1], tau_s=TAU, duration_s=DURATION)
    np.testing.assert_allclose(per_event, sino[p, v, r], rtol=1e-12)
    f = fan_sum_factors(s["delayeds"], layout)
    np.testing.assert_allclose(event_randoms(f, crystals), pettk.corrections._fans.pair_products(f, layout)[p, v, r])
    # the histogram puts each event back in its bin, in either crystal order
    h = histogram_crystal_pairs(np.concatenate([crystals[:1], crystals[:1, ::-1]]), layout)
    assert h.sum() == 2 and h[p[0], v[0], r[0]] == 2


def test_compressed_randoms_are_sums_of_span1_randoms(simulation):
    s = simulation
    span = compress(s["layout"], 3)
    est = randoms_from_singles(s["rates"], TAU, DURATION, span)
    assert est.shape == span.shape
    np.testing.assert_allclose(est, span.compress(s["expected"]), rtol=1e-12)
    assert randoms_from_delayeds(s["delayeds"], span).sum() == pytest.approx(s["delayeds"].sum())


def test_bad_input_raises(simulation):
    s = simulation
    layout = s["layout"]
    with pytest.raises(ValueError, match="singles must have shape"):
        randoms_from_singles(s["rates"][:, :-1], TAU, DURATION, layout)
    with pytest.raises(ValueError, match="singles must be >= 0"):
        randoms_from_singles(-s["rates"], TAU, DURATION, layout)
    with pytest.raises(ValueError, match="tau_s"):
        randoms_from_singles(s["rates"], 0.0, DURATION, layout)
    with pytest.raises(ValueError, match="duration_s"):
        randoms_from_singles(s["rates"], TAU, -1.0, layout)
    with pytest.raises(ValueError, match="delayeds must have the layout's shape"):
        randoms_from_delayeds(s["delayeds"][:-1], layout)
    with pytest.raises(ValueError, match="delayeds must be >= 0"):
        randoms_from_delayeds(-s["delayeds"], layout)
    with pytest.raises(ValueError, match="at least one count"):
        randoms_from_delayeds(np.zeros(layout.shape), layout)
    with pytest.raises(ValueError, match="span-1"):
        fan_sum_factors(s["delayeds"], compress(layout, 3))
    with pytest.raises(ValueError, match="crystals must lie in"):
        event_randoms(s["rates"], np.array([[0, 10**6]]), tau_s=TAU, duration_s=DURATION)
    with pytest.raises(TypeError, match="crystals must hold integer"):
        event_randoms(s["rates"], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="give both"):
        event_randoms(s["rates"], np.zeros((2, 2), dtype=int), tau_s=TAU)
    with pytest.raises(TypeError, match="layout must be"):
        randoms_from_singles(s["rates"], TAU, DURATION, pettk.ParallelBeam2D(8, 8, 1.0))


def test_petsird_delayeds_round_trip_to_randoms(tmp_path):
    pytest.importorskip("petsird")
    from test_petsird import ring_header

    from pettk.io.petsird import PETSIRDFile, histogram_petsird, write_petsird

    header = ring_header()
    empty = {(0, 0): (np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64))}
    no_delayeds = write_petsird(tmp_path / "prompts.bin", header, empty)
    with PETSIRDFile(no_delayeds) as f:
        scanner, ring, crystal = f.scanner.regular_polygon()
    layout = pettk.SinogramLayout(scanner, radial_trim=8)
    rates = _singles_rates(scanner, seed=5)
    expected = randoms_from_singles(rates, TAU, DURATION, layout)
    delayeds = np.random.default_rng(6).poisson(expected).astype(np.float64)
    # the delayed events of every bin, as PETSIRD detection bins (one energy bin: element index)
    n = scanner.n_crystals_per_ring
    det_of = np.full((scanner.n_rings, n), -1)
    det_of[ring, crystal] = np.arange(ring.size)
    p, v, r = np.nonzero(delayeds)
    reps = delayeds[p, v, r].astype(int)
    start = det_of[layout.plane_rings[p, 0], layout.crystal_pairs[v, r, 0]]
    end = det_of[layout.plane_rings[p, 1], layout.crystal_pairs[v, r, 1]]
    bins = np.repeat(np.stack([start, end], axis=1), reps, axis=0)
    bins = np.sort(bins, axis=1)[:, ::-1]  # PETSIRD: detection_bins[0] >= detection_bins[1]
    tof = np.full(bins.shape[0], 4)
    path = write_petsird(tmp_path / "delayeds.bin", header, empty, delayed_events={(0, 0): (bins, tof)})

    counts, _, _, tof_params = histogram_petsird(path, layout, kind="delayed")
    sino = counts.sum(axis=-1) if tof_params is not None else counts
    np.testing.assert_array_equal(sino, delayeds)
    est = randoms_from_delayeds(sino, layout)
    assert abs(est.sum() / expected.sum() - 1) < 0.02
    # list mode: the delayed events' crystals give the same factors
    with PETSIRDFile(path) as f:
        dets = np.concatenate([c.detectors for c in f.events(kind="delayed")])
    crystals = ring[dets] * n + crystal[dets]
    np.testing.assert_array_equal(histogram_crystal_pairs(crystals, layout), delayeds)
    with pytest.raises(ValueError, match="no delayed coincidences"):
        histogram_petsird(no_delayeds, layout, kind="delayed")


@pytest.mark.parametrize("radial_trim, max_ring_difference", [(0, None), (24, 1)])
def test_fan_sums_and_partner_sums_match_a_loop_over_bins(radial_trim, max_ring_difference):
    from pettk.corrections._fans import fan_sums, partner_sums

    layout = pettk.SinogramLayout(pettk.preset("tiny").scanner, radial_trim, max_ring_difference)
    rng = np.random.default_rng(4)
    f = rng.uniform(0.5, 1.5, (4, 96))
    d = rng.random(layout.shape)
    w = rng.random(layout.shape)
    fan, partners, weighted = np.zeros_like(f), np.zeros_like(f), np.zeros_like(f)
    for p, (r0, r1) in enumerate(layout.plane_rings):
        for v in range(layout.n_views):
            for r in range(layout.n_radial):
                a, b = layout.crystal_pairs[v, r]
                if r0 == r1 and a == b:  # a crystal with itself: no LOR
                    continue
                fan[r0, a] += d[p, v, r]
                fan[r1, b] += d[p, v, r]
                partners[r0, a] += f[r1, b]
                partners[r1, b] += f[r0, a]
                weighted[r0, a] += w[p, v, r] * f[r1, b]
                weighted[r1, b] += w[p, v, r] * f[r0, a]
    np.testing.assert_allclose(fan_sums(d, layout), fan, rtol=1e-12)
    np.testing.assert_allclose(partner_sums(f, layout), partners, rtol=1e-12)
    np.testing.assert_allclose(partner_sums(f, layout, w), weighted, rtol=1e-12)
