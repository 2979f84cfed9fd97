"""List-mode MLEM/OSEM: equal to sinogram EM on histogrammed events, chunking, subsets, API."""

import numpy as np
import pytest
import torch

import pettk
from pettk.recon import mlem
from pettk.recon.listmode import EventList, ListModeData, lm_mlem, lm_mlem_iterates, lm_osem


def _histogrammed_case(tiny, rng, tof=None, additive=False, psf=None):
    """A sinogram model with counts, and the same data as one event per count."""
    grid, layout = tiny.grid, tiny.layout
    truth = np.zeros(grid.shape)
    truth[10:22, 12:20, 2:6] = 1.0
    truth[14:17, 14:17, 3:5] = 4.0
    norm = rng.uniform(0.5, 1.5, layout.shape)
    sino = pettk.ForwardModel(pettk.Projector(grid, layout, tof=tof), normalisation=norm, psf=psf)
    ybar = sino.forward(truth)
    ybar *= 3000.0 / ybar.sum()
    add = np.full(sino.shape_out, 0.2 * ybar.mean()) if additive else None
    y = rng.poisson(ybar + (0 if add is None else add)).astype(np.float64)
    sino = pettk.ForwardModel(pettk.Projector(grid, layout, tof=tof), normalisation=norm, psf=psf, additive=add)
    # one event per count, in a random order
    flat = y.reshape(-1).astype(np.int64)
    bins = np.repeat(np.arange(flat.size), flat)
    bins = bins[rng.permutation(bins.size)]
    n_tof = 1 if tof is None else tof.n_bins
    lor, tof_bin = np.divmod(bins, n_tof)
    start, end = layout.lor_endpoints()
    lors = pettk.LORList(start.reshape(-1, 3)[lor], end.reshape(-1, 3)[lor], None if tof is None else tof_bin)
    events = pettk.ForwardModel(pettk.Projector(grid, lors, tof=tof), normalisation=norm.reshape(-1)[lor], psf=psf,
                                additive=None if add is None else add.reshape(-1)[bins])
    return sino, y, events


@pytest.mark.parametrize("case", ["plain", "tof+additive+psf"])
def test_list_mode_mlem_equals_sinogram_mlem(tiny, rng, case):
    tof = pettk.TOFParams(fwhm_mm=30.0, n_bins=9, bin_width_mm=16.0) if case != "plain" else None
    sino, y, events = _histogrammed_case(tiny, rng, tof=tof, additive=case != "plain",
                                         psf=2.5 if case != "plain" else None)
    sens = sino.sensitivity(torch.float64)
    x0 = np.where(sens.numpy() > 0, 1.0, 0.0)
    x_sino = mlem(sino, y, 4, x0=x0)
    x_lm = lm_mlem(events, sens.numpy(), 4, x0=x0)
    assert isinstance(x_lm, np.ndarray) and x_lm.dtype == np.float64
    np.testing.assert_allclose(x_lm, x_sino, rtol=1e-9, atol=1e-12 * x_sino.max())


def test_chunks_and_subsets(tiny, rng):
    sino, y, events = _histogrammed_case(tiny, rng)
    sens = sino.sensitivity(torch.float64)
    whole = lm_osem(events, sens, 2, 3)
    chunked = lm_osem(EventList(events, chunk_events=700), sens, 2, 3)
    assert isinstance(whole, torch.Tensor)
    torch.testing.assert_close(chunked, whole, rtol=1e-10, atol=1e-12 * float(whole.max()))
    # one subset is MLEM; OSEM's first epoch climbs the likelihood faster than MLEM's first iteration
    torch.testing.assert_close(lm_osem(events, sens, 2, 1), lm_mlem(events, sens, 2), rtol=0, atol=0)
    x_mlem = lm_mlem(events, sens, 1)
    x_osem = lm_osem(events, sens, 1, 6)
    assert pettk.poisson_nll(y, sino.forward(x_osem.numpy())) < pettk.poisson_nll(y, sino.forward(x_mlem.numpy()))
    # default start image: expected counts <x0, S> equal the number of events
    first = next(lm_mlem_iterates(events, sens, 1))
    assert first.iteration == 1 and first.info["n_events"] == int(y.sum())
    assert float(sens.max()) > 0 and bool((first.x >= 0).all())


def test_callback_progress_and_generic_data(tiny, rng):
    sino, y, events = _histogrammed_case(tiny, rng)
    sens = sino.sensitivity(torch.float32)
    seen = []
    x = lm_osem(events, sens, 5, 2, callback=lambda s: seen.append((s.iteration, s.subset)) or s.iteration == 3,
                progress=True)
    assert seen == [(1, 1), (2, 1), (3, 1)] and x.dtype == torch.float32

    class Chunks:  # any object with the ListModeData interface works
        def __init__(self, inner):
            self.inner, self.shape_in, self.n_events, self.psf = inner, inner.shape_in, inner.n_events, None

        def subset_models(self, subset, n_subsets):
            return self.inner.subset_models(subset, n_subsets)

    data = Chunks(EventList(events, chunk_events=500))
    assert isinstance(data, ListModeData)
    torch.testing.assert_close(lm_mlem(data, sens, 2), lm_mlem(events, sens, 2), rtol=1e-5, atol=1e-6)


def test_errors_before_any_work(tiny, rng):
    sino, y, events = _histogrammed_case(tiny, rng)
    sens = sino.sensitivity(torch.float64)
    with pytest.raises(ValueError, match="sensitivity must have the image shape"):
        lm_mlem(events, sens[:-1], 1)
    with pytest.raises(ValueError, match="finite and >= 0"):
        lm_mlem(events, -sens, 1)
    with pytest.raises(ValueError, match="n_subsets must be <= the number of events"):
        lm_osem(events, sens, 1, 10**9)
    with pytest.raises(TypeError, match="needs a model on a LORList"):
        lm_mlem(sino, sens, 1)
    with pytest.raises(TypeError, match="events must be a ForwardModel on a LORList or a ListModeData"):
        lm_mlem(np.ones(3), sens, 1)
    with pytest.raises(TypeError, match="n_iter must be an integer"):
        lm_mlem(events, sens, 1.5)
    with pytest.raises(ValueError, match="x0 must have shape"):
        lm_mlem(events, sens, 1, x0=np.ones(3))
    with pytest.raises(TypeError, match="mask must be a boolean image"):
        lm_mlem(events, sens, 1, mask=np.ones(tiny.grid.shape))
    with pytest.raises(ValueError, match="sensitivity is 0 everywhere"):
        lm_mlem(events, torch.zeros_like(sens), 1)
