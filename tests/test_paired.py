"""pettk.evaluation.paired and ``pettk compare``: paired margins of evaluate runs against a baseline."""

import math

import pytest

from pettk.cli import main
from pettk.evaluation import EvalData, evaluate
from pettk.evaluation.paired import compare_runs, markdown_table, merge_runs, paired_summary, read_run

SLICES_HEAD = "method,drf,tracer,subject,slice,psnr,ssim,nrmse,seconds\n"
LESIONS_HEAD = ("method,drf,tracer,subject,slice,lesion,kind,pixels,background_pixels,true_contrast,image_contrast,"
                "cr,skipped\n")
# (subject, slice) -> PSNR (dB), SSIM, seconds of each method at DRF 20 (fdg)
BSREM = {("s1", 0): (20.0, 0.80, 10.0), ("s1", 1): (22.0, 0.82, 12.0), ("s2", 0): (24.0, 0.84, 14.0)}
OSEM = {("s1", 0): (19.0, 0.79, 0.2), ("s1", 1): (23.0, 0.82, 0.3), ("s2", 0): (23.0, 0.83, 0.4)}
DDIP = {("s1", 0): (21.0, 0.85, 5.0), ("s1", 1): (24.0, 0.83, 6.0), ("s2", 0): (26.5, 0.86, 7.0)}


def _slice_lines(method, values, drf=20, tracer="fdg"):
    return "".join(f"{method},{drf},{tracer},{subject},{k},{p},{s},0.1,{t}\n"
                   for (subject, k), (p, s, t) in values.items())


def _lesion_line(method, subject, k, lesion, kind, cr, skipped=""):
    return f"{method},20,fdg,{subject},{k},{lesion},{kind},4,30,2,1.5,{cr},{skipped}\n"


def _run(folder, slices: str, lesions: str | None = None):
    folder.mkdir()
    (folder / "slices.csv").write_text(SLICES_HEAD + slices)
    if lesions is not None:
        (folder / "lesions.csv").write_text(LESIONS_HEAD + lesions)
    return folder


@pytest.fixture
def runs(tmp_path):
    """Classical baselines in one folder, a learned method in another, on the same slices."""
    classical = _run(tmp_path / "classical", _slice_lines("osem", OSEM) + _slice_lines("bsrem-rdp", BSREM),
                     _lesion_line("bsrem-rdp", "s1", 0, 1, "hot", 0.5)
                     + _lesion_line("bsrem-rdp", "s2", 0, 1, "hot", 0.7)
                     + _lesion_line("bsrem-rdp", "s1", 1, 2, "cold", 0.4)
                     + _lesion_line("bsrem-rdp", "s1", 1, 3, "", "", "fewer than 2 pixels"))
    learned = _run(tmp_path / "learned", _slice_lines("ddip", DDIP),
                   _lesion_line("ddip", "s1", 0, 1, "hot", 0.2) + _lesion_line("ddip", "s2", 0, 1, "hot", 0.4)
                   + _lesion_line("ddip", "s1", 1, 2, "cold", 0.6))
    return classical, learned


def test_paired_margins_by_hand(runs):
    osem, bsrem, ddip = compare_runs(runs, "bsrem-rdp")
    assert [e["method"] for e in (osem, bsrem, ddip)] == ["osem", "bsrem-rdp", "ddip"]
    assert all(e["n"] == 3 and e["drf"] == 20.0 and e["baseline"] == "bsrem-rdp" for e in (osem, bsrem, ddip))
    # ddip - bsrem-rdp: PSNR +1, +2, +2.5 dB; SSIM +0.05, +0.01, +0.02
    assert ddip["d_psnr"] == pytest.approx(11 / 6) and ddip["d_psnr_std"] == pytest.approx(math.sqrt(7 / 12))
    assert ddip["d_ssim"] == pytest.approx(0.08 / 3) and ddip["d_ssim_std"] == pytest.approx(math.sqrt(0.0013 / 3))
    assert (ddip["better"], ddip["ssim_better"]) == (3, 3)
    # osem - bsrem-rdp: PSNR -1, +1, -1 dB (sample std sqrt(4/3)); SSIM -0.01, 0, -0.01
    assert osem["d_psnr"] == pytest.approx(-1 / 3) and osem["d_psnr_std"] == pytest.approx(math.sqrt(4 / 3))
    assert osem["d_ssim"] == pytest.approx(-0.02 / 3) and osem["d_ssim_std"] == pytest.approx(math.sqrt(1e-4 / 3))
    assert (osem["better"], osem["ssim_better"]) == (1, 0)
    assert bsrem["d_psnr"] is None and bsrem["better"] is None
    # per-method means; CR over the scored lesions (the skipped one left out), sample std
    assert ddip["psnr"] == pytest.approx(71.5 / 3) and bsrem["psnr_std"] == pytest.approx(2.0)
    assert ddip["seconds"] == pytest.approx(6.0) and bsrem["ssim"] == pytest.approx(0.82)
    assert (bsrem["cr_hot"], bsrem["cr_hot_std"], bsrem["n_hot"]) == pytest.approx((0.6, math.sqrt(0.02), 2))
    assert (bsrem["cr_cold"], bsrem["cr_cold_std"], bsrem["n_cold"]) == pytest.approx((0.4, 0.0, 1))
    assert (ddip["cr_hot"], ddip["cr_hot_std"], ddip["n_hot"]) == pytest.approx((0.3, math.sqrt(0.02), 2))
    assert osem["n_hot"] == 0 and math.isnan(osem["cr_hot"])


def test_markdown_layout(runs):
    table = markdown_table(compare_runs(runs, "bsrem-rdp"))
    assert table.splitlines() == [
        "| method | DRF | n | PSNR (dB) | Δ PSNR vs BSREM-RDP (paired) | SSIM | Δ SSIM (paired) | CR hot | CR cold "
        "| s / slice |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| OSEM + filter | 20 | 3 | 21.67 ± 2.31 | -0.33 ± 1.15 (1/3 better) | 0.813 ± 0.021 | -0.007 ± 0.006 "
        "| n/a | n/a | 0.3 |",
        "| BSREM-RDP | 20 | 3 | 22.00 ± 2.00 | — | 0.820 ± 0.020 | — | 0.60 ± 0.14 (2) | 0.40 ± 0.00 (1) | 12.0 |",
        "| DDIP | 20 | 3 | 23.83 ± 2.75 | +1.83 ± 0.76 (3/3 better) | 0.847 ± 0.015 | +0.027 ± 0.021 "
        "| 0.30 ± 0.14 (2) | 0.60 ± 0.00 (1) | 6.0 |",
    ]
    custom = markdown_table(compare_runs(runs, "osem"), labels={"osem": "OSEM", "ddip": "DDIP (`ddip-fdg-128`)"})
    assert "| Δ PSNR vs OSEM (paired) |" in custom
    assert "| DDIP (`ddip-fdg-128`) | 20 | 3 | 23.83 ± 2.75 | +2.17 ± 1.26 (3/3 better) |" in custom


def test_rows_sorted_by_drf_with_a_tracer_column_when_mixed(tmp_path):
    low = {("s1", 0): (18.0, 0.7, 1.0), ("s1", 1): (19.0, 0.7, 1.0)}
    high = {("s1", 0): (18.5, 0.7, 1.0), ("s1", 1): (18.0, 0.7, 1.0)}
    run = _run(tmp_path / "r", _slice_lines("osem", low, drf=100) + _slice_lines("mlem", high, drf=100)
               + _slice_lines("osem", low, tracer="amyloid") + _slice_lines("mlem", high, tracer="amyloid"))
    rows = compare_runs([run], "osem")
    assert [(e["drf"], e["tracer"], e["method"]) for e in rows] == [
        (20.0, "amyloid", "osem"), (20.0, "amyloid", "mlem"), (100.0, "fdg", "osem"), (100.0, "fdg", "mlem")]
    assert rows[-1]["d_psnr"] == pytest.approx(-0.25) and rows[-1]["better"] == 1
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| method | DRF | tracer | n | PSNR (dB) | Δ PSNR vs OSEM + filter (paired) |")
    assert table[-1].startswith("| MLEM | 100 | fdg | 2 | 18.25 ± 0.35 | -0.25 ± 1.06 (1/2 better) |")


def test_identical_rows_in_two_folders_are_kept_once(runs, tmp_path):
    again = _run(tmp_path / "again", _slice_lines("ddip", DDIP))
    rows, lesions = merge_runs([*runs, again])
    assert len(rows) == 9 and len(lesions) == 7
    ddip = next(e for e in paired_summary(rows, lesions, "bsrem-rdp") if e["method"] == "ddip")
    assert ddip["n"] == 3 and ddip["d_psnr"] == pytest.approx(11 / 6)


def test_conflicting_rows_name_both_folders(runs, tmp_path):
    other = dict(DDIP)
    other[("s1", 1)] = (24.5, 0.83, 6.0)
    rerun = _run(tmp_path / "rerun", _slice_lines("ddip", other))
    with pytest.raises(ValueError, match=r"ddip at DRF 20, tracer fdg, subject s1, slice 1 is in .*learned.* and "
                                         r".*rerun.* with different values"):
        merge_runs([*runs, rerun])
    lesion = _run(tmp_path / "lesion", _slice_lines("ddip", DDIP), _lesion_line("ddip", "s1", 0, 1, "hot", 0.25))
    with pytest.raises(ValueError, match=r"ddip lesion 1 at DRF 20, tracer fdg, subject s1, slice 0 is in .*learned"):
        merge_runs([*runs, lesion])


def test_a_slice_missing_for_the_baseline_is_named(runs, tmp_path):
    extra = _run(tmp_path / "extra", _slice_lines("red", {**DDIP, ("s3", 4): (20.0, 0.8, 1.0)}))
    with pytest.raises(ValueError, match=r"red has DRF 20, tracer fdg, subject s3, slice 4 but the baseline "
                                         r"bsrem-rdp has not"):
        compare_runs([*runs, extra], "bsrem-rdp")


def test_bad_input(runs, tmp_path):
    with pytest.raises(ValueError, match=r"baseline 'mlem' is not among the evaluated methods \(osem, bsrem-rdp, "
                                         r"ddip\)"):
        compare_runs(runs, "mlem")
    with pytest.raises(TypeError, match="baseline must be a method name"):
        compare_runs(runs, None)
    with pytest.raises(FileNotFoundError, match="no evaluation output folder"):
        compare_runs([runs[0], tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no slices.csv"):
        read_run(tmp_path / "empty")
    with pytest.raises(ValueError, match="at least one"):
        merge_runs([])
    bad = _run(tmp_path / "bad", "osem,20,fdg,s1,0,high,0.8,0.1,1\n")
    with pytest.raises(ValueError, match=r"slices.csv line 2: psnr 'high' is not a number"):
        read_run(bad)
    (tmp_path / "cols").mkdir()
    (tmp_path / "cols" / "slices.csv").write_text("method,drf,psnr\nosem,20,20\n")
    with pytest.raises(ValueError, match="lacks the column"):
        read_run(tmp_path / "cols")
    with pytest.raises(ValueError, match="no rows"):
        read_run(_run(tmp_path / "header", ""))


def test_compare_command(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PETTK_DEBUG", raising=False)
    out = tmp_path / "tables" / "paired.md"
    assert main(["compare", *map(str, runs), "--baseline", "bsrem-rdp", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == markdown_table(compare_runs(runs, "bsrem-rdp"))
    assert printed == out.read_text() + f"wrote {out}\n"
    assert main(["compare", str(runs[1]), str(runs[0])]) == 0  # default baseline bsrem-rdp; methods in run order
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| DDIP", "| OSEM + filter", "| BSREM-RDP"]
    for argv, message in ((["compare", str(runs[1]), "--baseline", "bsrem-rdp"], "baseline 'bsrem-rdp' is not"),
                          (["compare", str(tmp_path / "missing")], "no evaluation output folder"),
                          (["compare", str(tmp_path / "tables")], "has no slices.csv"),
                          (["compare", *map(str, runs), "-o", str(tmp_path)], "is a folder; give a file name")):
        with pytest.raises(SystemExit, match=f"^pettk compare: .*{message}") as err:
            main(argv)
        assert "\n" not in str(err.value)


def test_compare_two_real_evaluate_runs(tmp_path):
    """``evaluate`` writes two folders (OSEM, MLEM) on the same simulated slices; paired against OSEM,
    the mean PSNR margin is the difference of the runs' mean PSNRs."""
    data = EvalData(n_subjects=1, slices_per_subject=2, image_size=32, counts_per_slice=2e5)
    options = dict(tune=False, write_nifti=False, progress=False)
    (osem,) = evaluate(tmp_path / "a", ("osem",), data, **options)
    (mlem,) = evaluate(tmp_path / "b", ("mlem",), data, **options)
    base, row = compare_runs([tmp_path / "a", tmp_path / "b"], "osem")
    assert (base["method"], row["method"], row["n"]) == ("osem", "mlem", 2)
    assert row["d_psnr"] == pytest.approx(mlem["psnr"] - osem["psnr"], abs=1e-3)   # CSVs keep 6 digits
    assert row["d_ssim"] == pytest.approx(mlem["ssim"] - osem["ssim"], abs=1e-5)
    assert row["n_hot"] == mlem["n_hot"] and row["cr_hot"] == pytest.approx(mlem["cr_hot"], abs=1e-5, nan_ok=True)
