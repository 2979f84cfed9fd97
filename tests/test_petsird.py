"""PETSIRD input: geometry, events, efficiencies, errors, histograms, list-mode reconstruction.

Files are written with petsird's own writers and generator helpers
(``petsird.helpers.generator``); positions are checked against ``petsird.helpers.geometry``.
"""

import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import pettk

petsird = pytest.importorskip("petsird")
generator = pytest.importorskip("petsird.helpers.generator")
from petsird.helpers import get_detection_efficiency  # noqa: E402
from petsird.helpers.geometry import get_detecting_box  # noqa: E402

from pettk.io import load_nifti  # noqa: E402
from pettk.io.petsird import (  # noqa: E402
    PETSIRDFile,
    PETSIRDFormatError,
    PETSIRDListMode,
    PETSIRDScanner,
    histogram_petsird,
    reconstruct_petsird,
    simulate_petsird_events,
    write_petsird,
)
from pettk.recon import mlem  # noqa: E402
from pettk.recon.listmode import lm_mlem  # noqa: E402

RADIUS, PITCH, DEPTH = 60.0, 4.0, 10.0
N_SIDES, N_CPS, N_RINGS = 12, 4, 4
TOF_FWHM = 20.0
GRID = pettk.ImageGrid((24, 24, 8), (3.0, 3.0, 2.0))


def ring_header(tof_bins=9, energy_bins=1):
    """A regular 12-gon of 4 crystals per side and 4 rings, built with petsird's generator helpers;
    the crystal box is re-centred on its element transform so that crystals sit centred on the
    polygon sides (the generator puts a box corner there)."""
    module = generator.CylindricalBlocksInfo(
        radius=RADIUS, crystal_length=(DEPTH, PITCH, PITCH), num_crystals_per_module=(1, N_CPS, N_RINGS),
        num_modules_along_ring=N_SIDES, num_modules_along_axis=1, arc=2 * math.pi, start_angle=0.0,
        module_spacing_along_axis=0.0, number_of_tof_bins=tof_bins, tof_resolution=TOF_FWHM, LLD=430.0, ULD=650.0,
        number_of_event_energy_bins=energy_bins, energy_resolution=0.1, material_id=1)
    scanner = generator.get_scanner_info([module])
    box = scanner.scanner_geometry.replicated_modules[0].object.detecting_elements.object.shape
    for corner in box.corners:
        corner.c = (corner.c - np.array([0.0, PITCH / 2, PITCH / 2])).astype(np.float32)
    return petsird.Header(scanner=scanner)


def written_positions(header):
    """Element centres (mean of the box corners) from petsird's own geometry helper."""
    rep = header.scanner.scanner_geometry.replicated_modules[0]
    n_el = len(rep.object.detecting_elements.transforms)
    return np.array([[np.mean([c.c for c in get_detecting_box(
        header.scanner, 0, petsird.ExpandedDetectionBin(module_index=m, element_index=e, energy_index=0)).corners],
        axis=0) for e in range(n_el)] for m in range(len(rep.transforms))], dtype=np.float64)


def monte_carlo_point_source(header, point, n_decays, seed):
    """Geometric Monte Carlo, independent of pettk: back-to-back photons from ``point`` in random
    3D directions, detected by the element nearest to where they cross the crystal cylinder,
    thinned by petsird's detection efficiency, TOF blurred and binned with the file's edges."""
    rng = np.random.default_rng(seed)
    pos = written_positions(header).reshape(-1, 3)
    r_c = float(np.hypot(pos[:, 0], pos[:, 1]).mean())
    u = rng.normal(size=(n_decays, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    p = np.asarray(point) + rng.normal(scale=0.3, size=(n_decays, 3))
    a = (u[:, :2] ** 2).sum(1)
    b = 2 * (p[:, :2] * u[:, :2]).sum(1)
    c = (p[:, :2] ** 2).sum(1) - r_c ** 2
    root = np.sqrt(np.maximum(b * b - 4 * a * c, 0))
    hits = [p + ((-b + sign * root) / (2 * np.maximum(a, 1e-12)))[:, None] * u for sign in (-1, 1)]
    z_max = np.abs(pos[:, 2]).max() + PITCH / 2
    axial = (a > 1e-9) & (np.abs(hits[0][:, 2]) < z_max) & (np.abs(hits[1][:, 2]) < z_max)
    hits, p = [h[axial] for h in hits], p[axial]
    det = [np.argmin(((h[:, None, :] - pos[None]) ** 2).sum(-1), axis=1) for h in hits]
    close = np.all([np.linalg.norm(h - pos[d], axis=1) < PITCH for h, d in zip(hits, det)], axis=0)
    d0, d1 = np.maximum(det[0], det[1])[close], np.minimum(det[0], det[1])[close]
    p = p[close]
    edges = np.asarray(header.scanner.tof_bin_edges[0][0].edges, dtype=np.float64)
    direction = pos[d1] - pos[d0]
    length = np.linalg.norm(direction, axis=1)
    good = length > 0
    tau = ((p - 0.5 * (pos[d0] + pos[d1])) * direction).sum(1) / np.where(good, length, 1.0)
    tau += rng.normal(scale=TOF_FWHM / 2.3548, size=tau.size)
    tof = np.searchsorted(edges, tau) - 1
    good &= (tof >= 0) & (tof < edges.size - 1)
    eff = np.array([get_detection_efficiency(header.scanner, (0, 0), int(i), int(j)) if g else 0.0
                    for i, j, g in zip(d0, d1, good)])
    good &= rng.random(eff.size) < eff / eff.max()
    return {(0, 0): (np.stack([d0[good], d1[good]], axis=1), tof[good])}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A TOF ring scanner with simulated events, binary and NDJSON."""
    folder = tmp_path_factory.mktemp("petsird")
    header = ring_header()
    scanner = PETSIRDScanner(header)
    blob = np.zeros(GRID.shape)
    blob[13:17, 8:11, 3:5] = 1.0
    events = simulate_petsird_events(scanner, blob, GRID, 8000, seed=3)
    binary = write_petsird(folder / "blob.bin", header, events, n_time_blocks=4)
    ndjson = write_petsird(folder / "blob.ndjson", header, events, n_time_blocks=4, format="ndjson")
    return types.SimpleNamespace(header=header, events=events, binary=binary, ndjson=ndjson, folder=folder)


@pytest.mark.parametrize("fmt", ["binary", "ndjson"])
def test_geometry_and_events_round_trip(files, fmt):
    with PETSIRDFile(getattr(files, fmt)) as f:
        assert f.format == fmt
        sc = f.scanner
        # every detecting element position read equals the one written (petsird's helper)
        np.testing.assert_allclose(sc.module_types[0].positions_mm, written_positions(files.header), atol=1e-4)
        pair = sc.type_pairs[0]
        np.testing.assert_array_equal(pair.tof_bin_edges_mm, files.header.scanner.tof_bin_edges[0][0].edges)
        assert pair.tof.fwhm_mm == pytest.approx(TOF_FWHM) and pair.tof_fwhm_mm == pytest.approx(TOF_FWHM)
        np.testing.assert_allclose(pair.tof.bin_edges_mm[pair.tof_offset:pair.tof_offset + 10],
                                   pair.tof_bin_edges_mm, atol=1e-4)
        np.testing.assert_allclose(sc.module_types[0].energy_bin_edges_kev, [430.0, 650.0])
        # the fitted polygon is the scanner that was written
        poly, ring, crystal = sc.regular_polygon()
        assert (poly.n_sides, poly.n_crystals_per_side, poly.n_rings) == (N_SIDES, N_CPS, N_RINGS)
        assert poly.radius_mm == pytest.approx(RADIUS + DEPTH / 2, abs=1e-4)
        assert poly.crystal_spacing_mm == pytest.approx(PITCH, abs=1e-4)
        np.testing.assert_allclose(poly.crystal_positions_mm()[ring, crystal], sc.detector_positions_mm, atol=1e-4)
        # every event, in file order, in chunks of at most chunk_events
        chunks = list(f.events(chunk_events=1000))
        assert all(len(c) <= 1000 for c in chunks)
        bins = np.concatenate([c.detection_bins for c in chunks])
        tof = np.concatenate([c.tof_idx for c in chunks])
        np.testing.assert_array_equal(bins, files.events[(0, 0)][0])
        np.testing.assert_array_equal(tof, files.events[(0, 0)][1])
        assert f.stats["events_kept"] == len(bins) == f.stats["events_read"] and f.stats["time_blocks"] == 4
        lors = chunks[0].lor_list()
        assert isinstance(lors, pettk.LORList) and lors.n_lors == len(chunks[0])
        np.testing.assert_array_equal(lors.tof_bin, chunks[0].tof_idx + pair.tof_offset)
        eff = np.array([get_detection_efficiency(files.header.scanner, (0, 0), int(a), int(b))
                        for a, b in chunks[0].detection_bins[:50]])
        np.testing.assert_allclose(chunks[0].efficiency[:50], eff, rtol=1e-6)


def test_petsird_generator_file(tmp_path, monkeypatch):
    """The example file of petsird's generator script (2 module types, 3 energy bins, TOF per
    module-type pair, component efficiencies), made smaller."""
    small0 = generator.CylindricalBlocksInfo(
        radius=100.0, crystal_length=(10.0, 4.0, 4.0), num_crystals_per_module=(1, 2, 3), num_modules_along_ring=10,
        num_modules_along_axis=2, arc=2 * math.pi, start_angle=0.0, module_spacing_along_axis=20.0,
        number_of_tof_bins=11, tof_resolution=9.0, LLD=450.0, ULD=650.0, number_of_event_energy_bins=3,
        energy_resolution=0.1, material_id=1)
    small1 = generator.CylindricalBlocksInfo(
        radius=50.0, crystal_length=(10.0, 2.0, 2.0), num_crystals_per_module=(1, 3, 4), num_modules_along_ring=6,
        num_modules_along_axis=1, arc=math.pi, start_angle=0.0, module_spacing_along_axis=0.0, number_of_tof_bins=5,
        tof_resolution=6.0, LLD=460.0, ULD=640.0, number_of_event_energy_bins=1, energy_resolution=0.8, material_id=1)
    monkeypatch.setattr(generator, "mtype0_def", small0)
    monkeypatch.setattr(generator, "mtype1_def", small1)
    monkeypatch.setattr(generator, "NUMBER_OF_TIME_BLOCKS", 3)
    monkeypatch.setattr(generator, "COUNT_RATE", 40.0)
    path = tmp_path / "generated.bin"
    with open(path, "wb") as out:
        monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=out))
        generator.generate()
    monkeypatch.undo()
    expected = 0
    with petsird.BinaryPETSIRDReader(str(path)) as reader:
        header = reader.read_header()
        for block in reader.read_time_blocks():
            expected += sum(len(block.value.prompt_events[t0][t1]) for t0 in range(2) for t1 in range(t0 + 1))
    with pytest.warns(RuntimeWarning, match="prompt_events has 3 rows for 2 module types"), PETSIRDFile(path) as f:
        sc = f.scanner
        assert [m.n_detectors for m in sc.module_types] == [20 * 6, 6 * 12]
        assert [p.types for p in sc.type_pairs] == [(0, 0), (1, 0), (1, 1)]
        assert sc.type_pairs[1].tof is None and sc.type_pairs[0].tof is not None
        assert sc.calibration_factor == 42.0
        chunks = list(f.events())
        assert sum(len(c) for c in chunks) == expected
        for c in chunks:
            eff = [get_detection_efficiency(header.scanner, c.pair.types, int(a), int(b)) for a, b in c.detection_bins]
            np.testing.assert_allclose(c.efficiency, eff, rtol=1e-6)
        with pytest.raises(ValueError, match="not a regular polygon.*2 module types"):
            sc.regular_polygon()
    sens = sc.sensitivity(sc.default_grid(8.0))
    assert sens.shape == sc.default_grid(8.0).shape and float(sens.max()) > 0


def test_point_source_reconstruction_end_to_end(tmp_path):
    header = ring_header()
    point = np.array([16.3, -10.2, 1.1])  # off-centre: a wrong TOF sign moves the centre by > 10 mm
    events = monte_carlo_point_source(header, point, 60000, seed=7)
    path = write_petsird(tmp_path / "point.bin", header, events, n_time_blocks=3)
    cache = tmp_path / "cache"
    cache.mkdir()
    result = reconstruct_petsird(path, tmp_path / "point.nii.gz", GRID, n_iter=3, n_subsets=4, chunk_events=4000,
                                 cache_dir=cache)
    assert list(cache.iterdir()) == []  # the event cache is gone
    image, grid = load_nifti(tmp_path / "point.nii.gz")
    assert grid == GRID and np.allclose(image, result.image)
    assert result.n_events == len(events[(0, 0)][0])
    centre = np.array([(image * c).sum() / image.sum() for c in GRID.coordinates()])
    assert np.all(np.abs(centre - point) < np.asarray(GRID.voxel_size_mm)), (centre, point)


def test_histogram_matches_list_mode(files):
    counts, eff, layout, tof = histogram_petsird(files.binary)
    assert counts.shape == layout.shape + (tof.n_bins,) and counts.sum() == len(files.events[(0, 0)][0])
    sino = pettk.ForwardModel(pettk.Projector(GRID, layout, tof=tof), normalisation=eff.astype(np.float64))
    x_sino = mlem(sino, counts.astype(np.float64), 3)
    with PETSIRDListMode(files.binary, GRID, chunk_events=3000) as data:
        sens = data.sensitivity(dtype=torch.float64)
        # same LORs: the sinogram's sensitivity (PETSIRD stores positions in float32, hence the tolerance)
        torch.testing.assert_close(sens, sino.sensitivity(torch.float64), rtol=0, atol=2e-3 * float(sens.max()))
        x_lm = lm_mlem(data, sens, 3).numpy()
    np.testing.assert_allclose(x_lm, x_sino, rtol=0, atol=2e-3 * x_sino.max())
    scanner = PETSIRDScanner(files.header)
    assert max(len(det) for _, det, _ in scanner.iter_lors(777)) <= 777
    chunked = scanner.sensitivity(GRID, chunk_lors=5000, dtype=torch.float64)
    torch.testing.assert_close(chunked, sens, rtol=1e-10, atol=1e-10 * float(sens.max()))


def test_energy_window_and_no_tof(tmp_path):
    header = ring_header(tof_bins=1, energy_bins=3)  # edges 430, 503.3, 576.7, 650 keV
    scanner = PETSIRDScanner(header)
    assert scanner.type_pairs[0].tof is None
    blob = np.zeros(GRID.shape)
    blob[10:14, 10:14, 3:5] = 1.0
    events = simulate_petsird_events(scanner, blob, GRID, 3000, seed=1)
    path = write_petsird(tmp_path / "energy.bin", header, events)
    bins = events[(0, 0)][0]
    in_window = np.sum((bins[:, 0] % 3 == 1) & (bins[:, 1] % 3 == 1))
    with PETSIRDFile(path, energy_window_kev=(500.0, 600.0)) as f:
        assert f.count_events() == in_window and f.stats["dropped_energy"] == len(bins) - in_window
    with pytest.raises(ValueError, match="contains none of the energy bins"):
        PETSIRDFile(path, energy_window_kev=(600.0, 610.0))


def _assert_names_file(err, path, *words):
    message = str(err.value)
    assert str(path) in message and any(w in message for w in words), message


def test_truncated_and_malformed_files(files, tmp_path):
    data = files.binary.read_bytes()
    for name, size in [("header", 300), ("middle", len(data) * 2 // 3), ("end-marker", len(data) - 1)]:
        cut = tmp_path / f"cut-{name}.bin"
        cut.write_bytes(data[:size])
        with pytest.raises(PETSIRDFormatError) as err:
            with PETSIRDFile(cut) as f:
                f.count_events()
        _assert_names_file(err, cut, "truncated", "malformed")
    text = files.ndjson.read_text()
    cut = tmp_path / "cut.ndjson"
    cut.write_text(text[: len(text) - 50])
    with pytest.raises(PETSIRDFormatError) as err:
        PETSIRDFile(cut).count_events()
    _assert_names_file(err, cut, "malformed time block")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a petsird file at all")
    with pytest.raises(PETSIRDFormatError) as err:
        PETSIRDFile(junk)
    _assert_names_file(err, junk, "not a PETSIRD file")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(PETSIRDFormatError, match="empty file"):
        PETSIRDFile(tmp_path / "empty.bin")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        PETSIRDFile(tmp_path / "missing.bin")
    # a header pettk cannot use
    header = ring_header()
    header.scanner.tof_bin_edges[0][0].edges = np.array([-150, -50, 0, 70, 150], dtype=np.float32)
    bad = write_petsird(tmp_path / "uneven-tof.bin", header, {(0, 0): (np.zeros((0, 2)), np.zeros(0))})
    with pytest.raises(PETSIRDFormatError) as err:
        PETSIRDFile(bad)
    _assert_names_file(err, bad, "equal width")
    # events the scanner cannot have
    for events, words in [({(0, 0): ([[10**6, 0]], [0])}, "outside the 192 detection bins"),
                          ({(0, 0): ([[3, 5]], [0])}, "not ordered"),
                          ({(0, 0): ([[5, 3]], [9])}, "tof_idx 9 is outside")]:
        bad = write_petsird(tmp_path / "bad-event.bin", ring_header(), events)
        with pytest.raises(PETSIRDFormatError) as err:
            PETSIRDFile(bad).count_events()
        _assert_names_file(err, bad, words)


def test_nothing_half_written(files, tmp_path):
    data = files.binary.read_bytes()
    cut = tmp_path / "in" / "cut.bin"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) - 1])
    out, cache = tmp_path / "out", tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(PETSIRDFormatError, match="truncated"):
        reconstruct_petsird(cut, out / "image.nii.gz", GRID, n_iter=1, n_subsets=2, cache_dir=cache)
    assert not out.exists() or list(out.iterdir()) == []
    assert list(cache.iterdir()) == []
    with pytest.raises(ValueError, match="out_nifti must end in .nii or .nii.gz"):
        reconstruct_petsird(files.binary, tmp_path / "image.png")
    # a writer that fails half-way leaves nothing behind either
    target = tmp_path / "partial.bin"
    with pytest.raises(ValueError, match="must be >= 0"), warnings.catch_warnings():
        write_petsird(target, files.header, {(0, 0): ([[1, 0], [-1, 0]], [0, 0])})
    assert not target.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial")] == []


def test_cli_recon_petsird(files, tmp_path, capsys):
    from pettk.cli import main

    out = tmp_path / "cli.nii.gz"
    assert main(["recon", "--petsird", str(files.binary), "-o", str(out), "-n", "1", "-s", "2", "--voxel-size", "3",
                 "--no-progress"]) == 0
    image, grid = load_nifti(out)
    assert image.shape == grid.shape and image.sum() > 0 and np.isfinite(image).all()
    assert f"{len(files.events[(0, 0)][0])} events" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not both"):
        main(["recon", "x.npz", "--petsird", str(files.binary), "-o", str(out)])
    with pytest.raises(SystemExit, match="list-mode OSEM"):
        main(["recon", "--petsird", str(files.binary), "-o", str(out), "-a", "mlem"])
    with pytest.raises(SystemExit, match="give a sinogram file"):
        main(["recon", "-o", str(out)])
    with pytest.raises(SystemExit, match=r"\.nii"):
        main(["recon", "--petsird", str(files.binary), "-o", str(tmp_path / "x.png")])
