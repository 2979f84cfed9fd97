"""Cohort reconstruction on Dask (pettk.batch): per-study tasks, failures, resume, scheduler by address.

The clusters here use thread workers (``processes=False``): every study is still its own Dask task
placed by the distributed scheduler and collected with ``as_completed``, exactly the code path of
process workers, without paying for spawning interpreters (pettk + torch + numba each) on a
2-core CI machine. The scheduler-by-address test talks to its cluster over TCP, so the tasks and
their results go through Dask's serialisation as they would between machines.
"""

import argparse
import csv

import numpy as np
import pytest

import pettk
from pettk import recon
from pettk.io import load_nifti, save_sinogram
from pettk.sim import shepp_logan_2d

distributed = pytest.importorskip("distributed")

from pettk.batch import (  # noqa: E402 - after the importorskip on purpose
    REPORT_NAME,
    CohortReport,
    ReconOptions,
    Study,
    cohort_main,
    read_manifest,
    reconstruct_cohort,
    reconstruct_study,
)

GRID = pettk.ImageGrid((24, 24), 2.0)
BEAM = pettk.ParallelBeam2D(n_views=16, n_radial=35, radial_spacing_mm=2.0)
FAST = dict(n_iter=2, n_subsets=4, progress=False)


def _write_study(folder, name, seed, **factors):
    model = pettk.ForwardModel(pettk.Projector(GRID, BEAM))
    x = shepp_logan_2d(GRID) * (1.0 + 0.1 * seed)
    rng = np.random.default_rng(seed)
    y = rng.poisson(np.asarray(model.forward(x), dtype=np.float64) * 5.0).astype(np.float32)
    return save_sinogram(folder / f"{name}.npz", y, BEAM, GRID, **factors)


def _cohort(tmp_path, n=6, corrupt=("s3",)):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = []
    for i in range(n):
        name = f"s{i}"
        path = _write_study(raw, name, i)
        if name in corrupt:
            path.write_bytes(b"this is not an npz file")
        rows.append({"study": name, "sinogram": f"raw/{name}.npz"})
    manifest = tmp_path / "cohort.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["study", "sinogram"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_two_worker_cohort_reports_failure_and_resumes(tmp_path):
    manifest = _cohort(tmp_path)
    out = tmp_path / "out"
    report = reconstruct_cohort(manifest, out, scheduler="local", n_workers=2, processes=False, **FAST)
    assert isinstance(report, CohortReport) and len(report) == 6
    assert report.done == ["s0", "s1", "s2", "s4", "s5"] and report.failed == ["s3"] and not report.ok
    bad = report["s3"]
    assert f"while reading {tmp_path / 'raw' / 's3.npz'}" in bad.error, bad.error
    assert "Traceback" in bad.traceback
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == [f"s{i}.nii.gz" for i in (0, 1, 2, 4, 5)]
    assert not list(out.glob(".*"))  # no temporary files left behind
    rows = list(csv.DictReader(open(out / REPORT_NAME)))
    assert [r["status"] for r in rows] == ["done"] * 3 + ["failed"] + ["done"] * 2

    # the task computed exactly what a direct OSEM call computes
    image, grid = load_nifti(out / "s1.nii.gz", ndim=2)
    assert grid == GRID and image.dtype == np.float32
    data = pettk.io.load_sinogram(tmp_path / "raw" / "s1.npz")
    direct = recon.osem(pettk.ForwardModel(pettk.Projector(GRID, BEAM)), data.prompts, 2, 4)
    np.testing.assert_allclose(image, direct, rtol=1e-6, atol=1e-6 * float(direct.max()))

    # rerun: the five finished studies are skipped (not rewritten), the corrupt one fails again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    again = reconstruct_cohort(manifest, out, scheduler="local", n_workers=2, processes=False, **FAST)
    assert again.skipped == ["s0", "s1", "s2", "s4", "s5"] and again.failed == ["s3"] and again.done == []
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == stamps
    assert "s3" in str(again) and "5 skipped" in again.summary()


def test_scheduler_by_address_optional_columns_client_and_cli(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_study(raw, "plain", 0)
    _write_study(raw, "corrected", 1)
    nontof = pettk.Projector(GRID, BEAM).shape_out
    rng = np.random.default_rng(7)
    acf = rng.uniform(0.3, 1.0, nontof)
    bkg = np.full(nontof, 0.5)
    np.save(raw / "acf.npy", acf)
    np.save(raw / "bkg.npy", bkg)
    manifest = tmp_path / "m.csv"
    manifest.write_text("study,sinogram,attenuation,additive\nplain,raw/plain.npz,,\n"
                        "corrected,raw/corrected.npz,raw/acf.npy,raw/bkg.npy\n")
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        report = reconstruct_cohort(manifest, out, scheduler=address, method="mlem", n_iter=3, progress=False)
        assert report.done == ["plain", "corrected"], [r.error for r in report]
        assert all(r.worker.startswith("tcp://") for r in report)

        # the optional columns reached the model: compare with a direct MLEM on the same arrays
        data = pettk.io.load_sinogram(raw / "corrected.npz")
        model = pettk.ForwardModel(pettk.Projector(GRID, BEAM), attenuation=acf, additive=bkg)
        direct = recon.mlem(model, data.prompts.astype(np.float32), 3)
        image, _ = load_nifti(out / "corrected.nii.gz", ndim=2)
        np.testing.assert_allclose(image, direct, rtol=1e-5, atol=1e-5 * float(direct.max()))

        # a Client passed in is used as it is and left open
        with distributed.Client(cluster) as client:
            again = reconstruct_cohort(manifest, out, scheduler=client, overwrite=True, method="mlem", n_iter=1,
                                       progress=False)
            assert again.done == ["plain", "corrected"]
            assert client.status == "running"

        # pettk recon --cohort ... as the CLI would call it
        args = argparse.Namespace(sinogram=None, cohort=str(manifest), output=str(tmp_path / "cli"),
                                  scheduler=address, algorithm="osem", iterations=1, subsets=2, psf_mm=0.0,
                                  post_filter_mm=0.0, prior="rdp", beta=1.0, gamma=2.0, epsilon=1e-3,
                                  no_progress=True, workers=None, threads_per_worker=1)
        assert cohort_main(args) == 0
        assert sorted(p.name for p in (tmp_path / "cli").glob("*.nii.gz")) == ["corrected.nii.gz", "plain.nii.gz"]


def test_finished_cohort_starts_no_cluster(tmp_path, monkeypatch):
    manifest = _cohort(tmp_path, n=2, corrupt=())
    out = tmp_path / "out"
    out.mkdir()
    for name in ("s0", "s1"):
        (out / f"{name}.nii.gz").write_bytes(b"finished earlier")

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started although every study was finished")

    monkeypatch.setattr("pettk.batch._client", no_cluster)
    report = reconstruct_cohort(manifest, out, **FAST)
    assert report.skipped == ["s0", "s1"] and report.ok


def test_reconstruct_study_returns_failures(tmp_path):
    result = reconstruct_study(Study("gone", tmp_path / "missing.npz"), tmp_path / "gone.nii.gz", ReconOptions())
    assert result.status == "failed" and result.error.startswith("FileNotFoundError while reading")
    assert not (tmp_path / "gone.nii.gz").exists()


def test_manifest_paths_resolve_against_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "m.csv"
    manifest.write_text("Study , Sinogram,mu\na.1,x/a.npz,\nb_2,/abs/b.npz,mu/b.nii.gz\n")
    studies = read_manifest(manifest)
    assert [s.study for s in studies] == ["a.1", "b_2"]
    assert studies[0].sinogram == (tmp_path / "sub" / "x" / "a.npz").resolve()
    assert studies[0].mu is None and studies[1].mu == (tmp_path / "sub" / "mu" / "b.nii.gz").resolve()
    assert str(studies[1].sinogram) == "/abs/b.npz"
    assert read_manifest([{"study": "r", "sinogram": "r.npz"}])[0].attenuation is None


@pytest.mark.parametrize("text, match", [
    ("study,path\na,a.npz\n", "required column"),
    ("study,sinogram,attenuaton\na,a.npz,\n", "unknown column"),
    ("study,sinogram\na,a.npz\na,b.npz\n", "appears in rows 2 and 3"),
    ("study,sinogram\n../a,a.npz\n", "study id"),
    ("study,sinogram\na,\n", "must not be empty"),
    ("study,sinogram\n", "no study"),
])
def test_bad_manifests_fail_before_any_work(tmp_path, text, match):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(ValueError, match=match):
        reconstruct_cohort(manifest, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="fbp"), ValueError, "method"),
    (dict(n_iter=0), ValueError, "n_iter"),
    (dict(n_subsets=2.5), ValueError, "n_subsets"),
    (dict(beta=-1.0), ValueError, "beta"),
    (dict(prior="l1"), ValueError, "prior"),
    (dict(scheduler=8786), TypeError, "scheduler"),
    (dict(scheduler=""), ValueError, "scheduler"),
    (dict(n_workers=0), ValueError, "n_workers"),
])
def test_bad_options_fail_before_any_work(tmp_path, kwargs, error, match):
    manifest = _cohort(tmp_path, n=1, corrupt=())
    with pytest.raises(error, match=match):
        reconstruct_cohort(manifest, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_rejects_sinogram_with_cohort(tmp_path):
    args = argparse.Namespace(sinogram="a.npz", cohort="m.csv", output=str(tmp_path))
    with pytest.raises(SystemExit, match="not both"):
        cohort_main(args)


def test_pettk_recon_cohort_command_line(tmp_path, capsys):
    """The real parser: a finished cohort is all skipped (no cluster needed); conflicts are refused."""
    from pettk.cli import main

    manifest = _cohort(tmp_path, n=2, corrupt=())
    out = tmp_path / "out"
    first = reconstruct_cohort(manifest, out, scheduler="local", n_workers=1, processes=False, **FAST)
    assert first.done == ["s0", "s1"]
    assert main(["recon", "--cohort", str(manifest), "-o", str(out), "--no-progress"]) == 0
    assert "2 skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="give no other input"):
        main(["recon", "x.npz", "--cohort", str(manifest), "-o", str(out)])
