"""Honest baselines in `pettk evaluate`: lesion contrast recovery, `--data DIR`, tuning on the
validation split of the evaluated data (never its test split)."""

import json
import math
import re
import shutil

import numpy as np
import pytest

from pettk.cli import main
from pettk.evaluation import VALIDATION_SEED, EvalData, evaluate
from pettk.metrics import lesion_contrast_recovery, lesion_rois
from pettk.priors import ImagePrior, SinogramRestorer
from pettk.recon import mlem, osem
from pettk.sim.datasets import FIELDS, DatasetConfig, build_dataset

# -- contrast recovery -------------------------------------------------------------------------


def _masks():
    lesion = np.zeros((10, 10), dtype=bool)
    lesion[4:6, 4:6] = True  # 4 pixels
    background = np.zeros_like(lesion)
    background[0:2, :] = True  # 20 pixels
    return lesion, background


def test_lesion_contrast_recovery_by_hand():
    lesion, background = _masks()
    truth = np.full((10, 10), 2.0)
    truth[lesion] = 6.0  # true ratio 3: true contrast 2
    assert lesion_contrast_recovery(truth, truth, lesion, background) == pytest.approx(1.0)
    image = np.full((10, 10), 2.0)
    image[0, :] = 3.0  # background mean (10 * 3 + 10 * 2) / 20 = 2.5
    image[lesion] = 5.0  # image ratio 2: (2 - 1) / (3 - 1)
    assert lesion_contrast_recovery(image, truth, lesion, background) == pytest.approx(0.5)
    image[lesion] = 2.5  # no contrast at all
    assert lesion_contrast_recovery(image, truth, lesion, background) == pytest.approx(0.0)
    # cold: true ratio 0.25 (contrast -0.75); image ratio 1.25 / 2.5 = 0.5: (0.5 - 1) / (0.25 - 1) = 2/3
    cold_truth = truth.copy()
    cold_truth[lesion] = 0.5
    image[lesion] = 1.25
    assert lesion_contrast_recovery(image, cold_truth, lesion, background) == pytest.approx(2.0 / 3.0)
    assert lesion_contrast_recovery(cold_truth, cold_truth, lesion, background) == pytest.approx(1.0)
    # the true contrast is measured on the truth's own masks: a partial-volume edge in the lesion
    # (true mean (3 * 6 + 4) / 4 = 5.5, ratio 2.75) and an image that matches it score 1
    pv_truth = truth.copy()
    pv_truth[4, 4] = 4.0
    assert lesion_contrast_recovery(pv_truth * 7.0, pv_truth, lesion, background) == pytest.approx(1.0)


def test_lesion_contrast_recovery_errors():
    lesion, background = _masks()
    truth = np.full((10, 10), 2.0)
    truth[lesion] = 6.0
    with pytest.raises(ValueError, match="lesion_mask is empty"):
        lesion_contrast_recovery(truth, truth, np.zeros_like(lesion), background)
    with pytest.raises(ValueError, match="background_mask is empty"):
        lesion_contrast_recovery(truth, truth, lesion, np.zeros_like(lesion))
    with pytest.raises(ValueError, match="must not overlap"):
        lesion_contrast_recovery(truth, truth, lesion, lesion | background)
    with pytest.raises(ValueError, match="true contrast is 0"):
        lesion_contrast_recovery(truth, np.full((10, 10), 2.0), lesion, background)
    with pytest.raises(ValueError, match="true background mean must be > 0"):
        lesion_contrast_recovery(truth, np.where(lesion, 1.0, 0.0), lesion, background)
    with pytest.raises(ValueError, match="image's background mean must be > 0"):
        lesion_contrast_recovery(np.zeros((10, 10)), truth, lesion, background)
    with pytest.raises(ValueError, match="same shape"):
        lesion_contrast_recovery(truth[:5], truth, lesion, background)
    with pytest.raises(TypeError, match="boolean mask"):
        lesion_contrast_recovery(truth, truth, lesion.astype(float), background)


# -- lesion and background regions ------------------------------------------------------------


def _shell(centre, shape, inner=1.5, outer=3.5):
    """Pixels whose distance to one pixel ``centre`` is in (inner, outer], by enumeration."""
    out = np.zeros(shape, dtype=bool)
    for i in range(shape[0]):
        for j in range(shape[1]):
            d = math.hypot(i - centre[0], j - centre[1])
            out[i, j] = inner < d <= outer
    return out


def test_background_shell_on_a_synthetic_slice():
    shape = (21, 21)
    lesions = np.zeros(shape, dtype=np.float32)
    lesions[10, 10] = 1  # one-pixel lesions (min_pixels=1 below)
    lesions[10, 15] = 2
    truth = np.ones(shape)
    truth[10, 10] = 3.0  # hot
    truth[10, 15] = 0.2  # cold
    labels = np.full(shape, 7.0)  # grey matter
    labels[:, :8] = 5.0  # CSF on the left

    # one lesion alone, all parenchyma: the ring 1.5 < d <= 3.5 pixels (squared distances 4, 5, 8, 9, 10)
    (alone,) = lesion_rois(np.where(lesions == 1, 1, 0), truth, np.full(shape, 7.0), min_pixels=1)
    assert alone.background_pixels == 4 + 8 + 4 + 4 + 8
    assert np.array_equal(alone.background, _shell((10, 10), shape))

    first, second = lesion_rois(lesions, truth, labels, min_pixels=1)
    near_second = _shell((10, 15), shape, inner=-1, outer=1.5)  # lesion 2 and its 8 neighbours
    expected = _shell((10, 10), shape) & ~near_second & (labels == 7)
    assert np.array_equal(first.background, expected) and first.background_pixels < 28
    assert (first.lesion, first.kind, first.pixels, first.skipped) == (1, "hot", 1, "")
    assert first.true_contrast == pytest.approx(3.0)
    assert (second.lesion, second.kind) == (2, "cold") and second.true_contrast == pytest.approx(0.2)
    assert first.recovery(truth, truth) == pytest.approx(1.0)

    # without labels: pixels with at least 10 % of the maximum true activity outside the lesions
    truth_csf = np.where(labels == 7, truth, 0.0)
    first_t, _ = lesion_rois(lesions, truth_csf, None, min_pixels=1)
    assert np.array_equal(first_t.background, expected)

    # lesions under min_pixels, or with a true contrast too close to 1, are listed but skipped
    default = lesion_rois(lesions, truth, labels)
    assert [r.skipped for r in default] == ["fewer than 2 pixels"] * 2 and all(r.kind == "" for r in default)
    assert math.isnan(default[0].recovery(truth, truth))
    faint = truth.copy()
    faint[10, 10] = 1.05
    assert lesion_rois(lesions, faint, labels, min_pixels=1)[0].skipped == "true contrast within 0.1 of 1"
    with pytest.raises(ValueError, match="non-negative integer"):
        lesion_rois(lesions + 0.5, truth)


# -- pettk evaluate --data DIR --tune ---------------------------------------------------------

TINY_TUNING = ["--tune-osem-iterations", "1", "3", "--tune-filter-mm", "0", "6", "--tune-beta", "0.3", "3",
               "--tune-gamma", "2", "--tune-extend", "0", "--bsrem-max-epochs", "30"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """3 subjects (train, validation, test) × 2 slices, 32 × 32, DRF 20; the test subject has a hot
    and a cold lesion of 2+ pixels in each slice."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    build_dataset(root, DatasetConfig(n_subjects=3, slices_per_subject=2, image_size=32, geometry="parallel",
                                      drfs=(20.0,), split=(1, 1, 1), lesions=2, seed=1, slice_range_mm=20.0),
                  progress=False)
    return root


def _evaluate(data, out, *extra):
    return main(["evaluate", "--data", str(data), "-o", str(out), "--methods", "osem", "bsrem-rdp", "--no-progress",
                 *extra])


def _table_rows(md: str) -> dict:
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("OSEM + filter", "BSREM-RDP"):
            rows[cells[0]] = cells
    return rows


def test_evaluate_data_tunes_on_the_validation_split_only(tiny_data, tmp_path, capsys):
    out = tmp_path / "ev"
    assert _evaluate(tiny_data, out, "--tune", *TINY_TUNING) == 0
    assert {"metrics.md", "metrics.csv", "slices.csv", "lesions.csv", "tuning.json", "figure.png",
            "nifti"} == {p.name for p in out.iterdir()}
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    validation = {s["name"] for s in manifest["subjects"] if s["split"] == "validation"}
    tuning = json.loads((out / "tuning.json").read_text())
    assert {s["subject"] for s in tuning["slices"]["20"]} == validation and len(tuning["slices"]["20"]) == 2
    chosen = tuning["drfs"]["20"]["settings"]
    assert chosen["osem_iterations"] in (1, 3) and chosen["post_filter_mm"] in (0.0, 6.0)
    assert chosen["bsrem_beta"] in (0.3, 3.0) and chosen["rdp_gamma"] == 2.0 and chosen["bsrem_iterations"] == 30
    assert len(tuning["drfs"]["20"]["osem"]["scores"]) == 4 and len(tuning["drfs"]["20"]["bsrem-rdp"]["scores"]) == 2

    md = (out / "metrics.md").read_text()
    assert "tuned on 2 validation slices (the validation split of" in md
    n = chosen["osem_iterations"]
    assert (f"OSEM {n} iteration{'s' * (n != 1)} × 8 subsets, {chosen['post_filter_mm']:g} mm post-filter; "
            f"BSREM-RDP β {chosen['bsrem_beta']:g}, γ 2") in md
    assert "| CR hot | CR cold |" in md
    rows = _table_rows(md)
    assert set(rows) == {"OSEM + filter", "BSREM-RDP"}
    for cells in rows.values():
        assert cells[3] == "2"  # both test slices
        scored = 0
        for cell in cells[7:9]:  # CR hot, CR cold: "mean ± std (n)" (with seed 1: a hot and a cold lesion per slice)
            if cell != "n/a":
                mean, std, n = re.fullmatch(r"(-?[\d.]+) ± ([\d.]+) \((\d+)\)", cell).groups()
                assert math.isfinite(float(mean)) and math.isfinite(float(std)) and int(n) >= 1
                scored += int(n)
        assert scored >= 2
    lesions = (out / "lesions.csv").read_text().splitlines()
    assert lesions[0].startswith("method,drf,tracer,subject,slice,lesion,kind")
    assert all(",subject_002," in line for line in lesions[1:])  # the test subject only
    assert "tuning.json" in capsys.readouterr().out

    # another test split (other counts, other truth) leaves the tuning exactly as it was
    changed = tmp_path / "changed"
    shutil.copytree(tiny_data, changed)
    test_dir = changed / "subject_002"
    for name, factor in (("low_drf20", 2.0), ("truth", 0.5)):
        arr = np.load(test_dir / f"{name}.npy")
        np.save(test_dir / f"{name}.npy", (arr * factor).astype(np.float32))
    out2 = tmp_path / "ev2"
    assert _evaluate(changed, out2, *TINY_TUNING) == 0  # --tune is the default with a validation split
    assert json.loads((out2 / "tuning.json").read_text())["drfs"] == tuning["drfs"]
    assert (out2 / "slices.csv").read_text() != (out / "slices.csv").read_text()


def test_settings_of_an_earlier_run_are_reused_without_tuning(tiny_data, tmp_path):
    """``--settings RUN/tuning.json``: the same settings on the same test split give the same
    numbers, with no tuning; files combine by the methods they tuned; older files (a restorer's
    BSREM-RDP said by ``*_bsrem_beta`` > 0) read as today's fields; bad input before any work."""
    import csv

    from pettk.evaluation import settings_from_runs

    first, second = tmp_path / "tuned", tmp_path / "reused"
    assert _evaluate(tiny_data, first, "--tune", *TINY_TUNING) == 0
    assert _evaluate(tiny_data, second, "--settings", str(first / "tuning.json")) == 0
    assert not (second / "tuning.json").exists()

    def scores(folder):
        with open(folder / "slices.csv") as f:
            return [(r["method"], r["subject"], r["slice"], r["psnr"], r["ssim"]) for r in csv.DictReader(f)]
    assert scores(second) == scores(first)
    md = (second / "metrics.md").read_text()
    assert f"Settings, from osem, bsrem-rdp from {first / 'tuning.json'}: DRF 20: OSEM" in md

    record = json.loads((first / "tuning.json").read_text())
    chosen = record["drfs"]["20"]["settings"]
    osem_only = tmp_path / "osem_only.json"
    osem_only.write_text(json.dumps({**record, "methods": ["osem"], "drfs": {"20": {"settings": {
        **chosen, "osem_iterations": 7, "bsrem_beta": 99.0}}}}))
    per_drf, source = settings_from_runs([first, osem_only], [20])
    assert per_drf[20.0].osem_iterations == 7                      # the later file's osem ...
    assert per_drf[20.0].bsrem_beta == chosen["bsrem_beta"]        # ... not its untuned bsrem-rdp
    assert source == f"osem from {osem_only}; bsrem-rdp from {first / 'tuning.json'}"
    old = tmp_path / "old.json"
    legacy = {k: v for k, v in chosen.items() if not k.endswith("_reconstruction")}
    for beta, expected in ((0.0, ("osem", 1.0)), (3.0, ("bsrem-rdp", 3.0))):
        settings = {**legacy, "red_bsrem_beta": beta}
        old.write_text(json.dumps({"methods": ["red"], "drfs": {"20": {"settings": settings}}}))
        s = settings_from_runs([old], [20], ("red",))[0][20.0]
        assert (s.red_reconstruction, s.red_bsrem_beta) == expected

    out = tmp_path / "out"
    for extra, message in (((str(osem_only),), "no settings file tuned bsrem-rdp"),
                           ((str(first), "--tune-beta", "1"), "give no --tune or --tune-\\* option"),
                           ((str(tmp_path / "none.json"),), "settings file .*none.json does not exist"),
                           ((str(tiny_data / "manifest.json"),), "not a pettk evaluate tuning.json"),
                           ((str(first), "--drf", "100"), "holds no settings tuned at DRF 100")):
        with pytest.raises(SystemExit, match=f"pettk evaluate: .*{message}"):
            _evaluate(tiny_data, out, "--settings", *extra)
    assert not out.exists()


def test_evaluate_data_errors_come_before_any_work(tiny_data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"^pettk evaluate: DRF 7 not in the data set at .*; it has DRF 20$"):
        _evaluate(tiny_data, out, "--drf", "7")
    with pytest.raises(SystemExit, match="pettk evaluate: no pettk data set at .*missing manifest.json"):
        _evaluate(tmp_path / "nothing", out)
    with pytest.raises(SystemExit, match="drop --seed"):
        _evaluate(tiny_data, out, "--seed", "3")
    # a data set without validation subjects (only its manifest: nothing else may be read)
    bare = tmp_path / "bare"
    bare.mkdir()
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    for s in manifest["subjects"]:
        s["split"] = "train" if s["split"] == "validation" else s["split"]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="pettk evaluate: the data set at .* has no validation split"):
        _evaluate(bare, out, "--tune")
    with pytest.raises(ValueError, match="not both"):
        evaluate(out, ("osem",), EvalData(), data_dir=tiny_data)
    with pytest.raises(ValueError, match="overlap the validation seeds"):
        evaluate(out, ("osem",), EvalData(seed=VALIDATION_SEED))
    assert not out.exists()


def test_old_data_set_without_validation_or_lesion_maps(tiny_data, tmp_path):
    """Without a validation split --tune defaults to off (the TUNED constants); a data set without
    lesion maps (manifest version 1) reports CR as n/a with a note."""
    old = tmp_path / "old"
    shutil.copytree(tiny_data, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.update(version=1, fields=list(FIELDS))
    for s in manifest["subjects"]:
        s["split"] = "train" if s["split"] == "validation" else s["split"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "ev"
    assert main(["evaluate", "--data", str(old), "-o", str(out), "--methods", "osem", "--slices", "1",
                 "--no-progress"]) == 0
    assert not (out / "tuning.json").exists() and not (out / "lesions.csv").exists()
    md = (out / "metrics.md").read_text()
    assert "the fixed constants pettk.evaluation.TUNED" in md and "stores no lesion maps" in md
    assert "| OSEM + filter | 20 | fdg | 1 | " in md and "| n/a | n/a |" in md


def test_evaluate_tunes_simulated_heldout_data_on_validation_subjects(tmp_path):
    data = EvalData(n_subjects=1, slices_per_subject=1, image_size=32, counts_per_slice=2e5)
    summary = evaluate(tmp_path / "ev", ("osem",), data, tune_slices=2, write_nifti=False, progress=False,
                       tune_grid={"osem_iterations": (1, 2), "post_filter_mm": (0.0, 6.0)})
    tuning = json.loads((tmp_path / "ev" / "tuning.json").read_text())
    assert f"seeds {VALIDATION_SEED}..{VALIDATION_SEED + 1}" in tuning["source"]
    assert len(tuning["slices"]["20"]) == 2 and len(tuning["drfs"]["20"]["osem"]["scores"]) == 4
    assert summary[0]["method"] == "osem" and "cr_hot" in summary[0]


def test_a_model_of_another_image_size_is_refused_before_any_work(tmp_path):
    # the shipped PET-DDS model is 128 x 128; the default simulated data are 64 x 64
    with pytest.raises(SystemExit, match=r"^pettk evaluate: the pet-dds model was trained on 128 x 128 images but "
                                         r"the evaluated data are 64 x 64"):
        main(["evaluate", "-o", str(tmp_path / "ev"), "--methods", "pet-dds", "--no-tune", "--no-progress"])
    assert not (tmp_path / "ev").exists()


def test_osem_tuning_grid_extends_past_a_winning_end():
    from pettk.evaluation.tuning import _tune_osem

    calls = []

    def score(n, f):                       # best at 1 iteration and a 14 mm filter
        calls.append((n, f))
        return -abs(n - 1) - abs(f - 14.0)

    scores = _tune_osem(score, (2, 4, 8), (0.0, 4.0, 8.0, 10.0), extend=3)
    assert max(scores, key=scores.get) == (1, 14.0)
    assert len(calls) == len(set(calls))   # no grid point is reconstructed twice
    interior = _tune_osem(lambda n, f: -abs(n - 4) - abs(f - 4.0), (2, 4, 8), (0.0, 4.0, 8.0), extend=3)
    assert len(interior) == 9              # an interior optimum leaves the grid as it is


class _ScaledCounts(SinogramRestorer):
    """The simplest sinogram restorer: the unbiased full-dose estimate DRF · y_low (counts its calls)."""

    def __init__(self):
        self.calls = 0

    def restore(self, y_low, drf):
        self.calls += 1
        return drf * y_low


def test_restorers_get_the_same_tuning_freedom(tiny_data):
    """Issue 22 item 3: RED/DREAM are scored on restored images with tuned EM iterations x post-filter."""
    import torch

    from pettk.evaluation import _cases
    from pettk.evaluation.data import open_split
    from pettk.evaluation.tuning import tune_on_cases

    cases = [(d, c) for d, _, c in _cases(open_split(tiny_data, "validation", (20.0,)), torch.device("cpu"))]
    restorer = _ScaledCounts()
    chosen, record = tune_on_cases(cases, methods=("osem", "red"), osem_iterations=(1, 3), post_filter_mm=(0.0, 6.0),
                                   extend=0, models={"red": restorer}, restorer_map=False)
    assert restorer.calls == len(cases)                      # each sinogram restored once
    red, osem = record[20.0]["red"], record[20.0]["osem"]
    assert len(red["scores"]) == 4
    assert (chosen[20.0].red_osem_iterations, chosen[20.0].red_post_filter_mm) == \
        (red["best"]["osem_iterations"], red["best"]["post_filter_mm"])
    # DRF · y_low through the full-dose model is OSEM of the raw data through the low-dose model
    for a, b in zip(sorted(red["scores"], key=lambda r: (r["osem_iterations"], r["post_filter_mm"])),
                    sorted(osem["scores"], key=lambda r: (r["osem_iterations"], r["post_filter_mm"]))):
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-3)
    with pytest.raises(ValueError, match="needs the model"):
        tune_on_cases(cases, methods=("dream",))
    assert chosen[20.0].red_reconstruction == "osem" and "bsrem-rdp" not in red    # restorer_map=False: OSEM only


class _OSEMSample(ImagePrior):
    """A stand-in sampler (one OSEM iteration: a noisy image that EM and a filter improve); counts its calls."""

    def __init__(self, iterations: int = 1):
        self.calls = 0
        self.iterations = iterations

    def reconstruct(self, forward_model, y, *, mr=None, init=None, progress=False):
        self.calls += 1
        return osem(forward_model, y, self.iterations, 8)


def test_legopet_gets_the_post_processing_freedom_of_osem(tiny_data):
    """LegoPET's sample + MLEM iterations x post-filter, tuned on validation slices like OSEM + filter;
    each slice is sampled once and the runner reproduces the tuned score."""
    import torch

    from pettk.evaluation import _cases
    from pettk.evaluation.data import open_split
    from pettk.evaluation.methods import ClassicalSettings, make_runner, refined_sample
    from pettk.evaluation.tuning import tune_on_cases
    from pettk.metrics import psnr

    cases = [(d, c) for d, _, c in _cases(open_split(tiny_data, "validation", (20.0,)), torch.device("cpu"))]
    sampler = _OSEMSample()
    chosen, record = tune_on_cases(cases, methods=("legopet",), post_filter_mm=(0.0, 6.0), extend=0,
                                   models={"legopet": {20.0: sampler}})
    assert sampler.calls == len(cases)
    lego = record[20.0]["legopet"]
    assert len(lego["scores"]) == 5 * 2                     # EM iterations 0 1 2 4 8 x filter 0 6 mm
    s = chosen[20.0]
    best = lego["best"]
    assert (s.legopet_em_iterations, s.legopet_post_filter_mm) == (best["em_iterations"], best["post_filter_mm"])
    # a noisy sample is improved by EM + filter, so the freedom is used; 0 x 0 is the sample itself
    as_sampled = next(r["psnr"] for r in lego["scores"] if (r["em_iterations"], r["post_filter_mm"]) == (0, 0.0))
    assert best["psnr"] > as_sampled + 0.1
    run = make_runner("legopet", sampler, s)
    scores = [psnr(run(c).numpy(), c.truth.numpy()) for _, c in cases]
    assert float(np.mean(scores)) == pytest.approx(best["psnr"], abs=1e-4)
    # refined_sample: 0 iterations and 0 mm leave the sample; MLEM from it otherwise
    c = cases[0][1]
    x = osem(c.model_low, c.y_low, 1, 8)
    assert torch.equal(refined_sample(c, x, 0, 0.0), x)
    expected = mlem(c.model_low, c.y_low, 2, x0=x.clamp_min(1e-3 * float(x.max())))
    torch.testing.assert_close(refined_sample(c, x, 2, 0.0), expected)
    with pytest.raises(ValueError, match="legopet_em_iterations must be an integer >= 0"):
        ClassicalSettings(legopet_em_iterations=-1).validate()
    with pytest.raises(ValueError, match="legopet_post_filter_mm must be >= 0"):
        ClassicalSettings(legopet_post_filter_mm=-2.0).validate()
    with pytest.raises(ValueError, match="tuning legopet needs the model"):
        tune_on_cases(cases, methods=("legopet",))


@pytest.mark.parametrize("method", ["ddip", "pet-dds"])
def test_image_priors_get_the_post_filter_freedom_of_osem(tiny_data, method):
    """DDIP's and PET-DDS's image + a post-filter tuned on validation slices (grid widened past a
    winning widest value); each slice is reconstructed once, the runner reproduces the tuned score,
    and the choice is read back by ``settings_from_runs``'s fields."""
    import torch

    from pettk.evaluation import _cases
    from pettk.evaluation.data import open_split
    from pettk.evaluation.methods import ClassicalSettings, filter_field, make_runner
    from pettk.evaluation.reuse import METHOD_FIELDS
    from pettk.evaluation.tuning import tune_on_cases
    from pettk.metrics import psnr
    from pettk.recon import post_filter

    cases = [(d, c) for d, _, c in _cases(open_split(tiny_data, "validation", (20.0,)), torch.device("cpu"))]
    prior = _OSEMSample(iterations=4)         # 4 x 8 OSEM of 8.3 mm pixels: noisy, best filtered ~12 mm
    chosen, record = tune_on_cases(cases, methods=(method,), post_filter_mm=(0.0, 4.0, 8.0), extend=3,
                                   models={method: {20.0: prior}})
    assert prior.calls == len(cases)
    rec = record[20.0][method]
    scores = {r["post_filter_mm"]: r["psnr"] for r in rec["scores"]}
    field = filter_field(method)
    assert field == {"ddip": "ddip_post_filter_mm", "pet-dds": "pet_dds_post_filter_mm"}[method]
    assert METHOD_FIELDS[method] == (field,)
    best = rec["best"]["post_filter_mm"]
    assert getattr(chosen[20.0], field) == best == max(scores, key=scores.get)
    # the noisy image gains from a filter wider than the grid: widened by its step (12, 16 mm) until
    # the best lies inside it
    assert best > 8.0 and scores[best] > scores[0.0] + 0.5
    assert sorted(scores) == [0.0, 4.0, 8.0, 12.0, 16.0] and best == 12.0
    # the runner: the prior's image, filtered by hand with the chosen FWHM, scores the tuned mean
    run = make_runner(method, prior, chosen[20.0])
    for _, c in cases[:2]:
        torch.testing.assert_close(run(c), post_filter(osem(c.model_low, c.y_low, 4, 8), c.grid, best))
    mean = float(np.mean([psnr(run(c).numpy(), c.truth.numpy()) for _, c in cases]))
    assert mean == pytest.approx(scores[best], abs=1e-4)
    # untuned: the image as it is
    torch.testing.assert_close(make_runner(method, prior, ClassicalSettings())(cases[0][1]),
                               osem(cases[0][1].model_low, cases[0][1].y_low, 4, 8))
    with pytest.raises(ValueError, match=f"{field} must be >= 0"):
        ClassicalSettings(**{field: -1.0}).validate()
    with pytest.raises(ValueError, match=f"tuning {method} needs the model"):
        tune_on_cases(cases, methods=(method,))


def test_a_restorers_penalised_reconstruction_competes_with_its_osem(tiny_data):
    """The classical baseline's BSREM-RDP is a restorer's freedom too: the restored data, scaled back
    to the low-dose counts, reconstructed by converged BSREM-RDP over the same beta x gamma grid."""
    import dataclasses

    import torch

    from pettk.evaluation import _cases
    from pettk.evaluation.data import open_split
    from pettk.evaluation.methods import ClassicalSettings, converged_bsrem, make_runner
    from pettk.evaluation.tuning import tune_on_cases

    cases = [(d, c) for d, _, c in _cases(open_split(tiny_data, "validation", (20.0,)), torch.device("cpu"))]
    restorer = _ScaledCounts()
    chosen, record = tune_on_cases(cases, methods=("bsrem-rdp", "red"), osem_iterations=(1, 3),
                                   post_filter_mm=(0.0, 6.0), bsrem_beta=(0.1, 1.0), rdp_gamma=(2.0,), extend=0,
                                   models={"red": restorer})
    red, raw = record[20.0]["red"], record[20.0]["bsrem-rdp"]
    assert restorer.calls == len(cases)
    # DRF · y_low over DRF is the raw data: the same MAP image, the same score, at every (beta, gamma)
    key = lambda r: (r["rdp_gamma"], r["bsrem_beta"])  # noqa: E731
    assert [key(r) for r in sorted(red["bsrem-rdp"]["scores"], key=key)] == [(2.0, 0.1), (2.0, 1.0)]
    for a, b in zip(sorted(red["bsrem-rdp"]["scores"], key=key), sorted(raw["scores"], key=key)):
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-4)
    best_osem = max(r["psnr"] for r in red["scores"])
    best_map = red["bsrem-rdp"]["best"]["psnr"]
    assert red["best"]["psnr"] == max(best_osem, best_map)
    s = chosen[20.0]
    if best_map > best_osem:
        assert red["best"]["reconstruction"] == s.red_reconstruction == "bsrem-rdp"
        assert (s.red_bsrem_beta, s.red_rdp_gamma) == (red["bsrem-rdp"]["best"]["bsrem_beta"], 2.0)
    else:
        assert red["best"]["reconstruction"] == "osem" and s.red_reconstruction == "osem"
    # the runner: red_reconstruction "bsrem-rdp" reconstructs the restored data by converged BSREM-RDP
    case = cases[0][1]
    settings = ClassicalSettings(red_reconstruction="bsrem-rdp", red_bsrem_beta=1.0, red_rdp_gamma=2.0)
    expected = converged_bsrem(case, dataclasses.replace(settings, bsrem_beta=1.0, rdp_gamma=2.0))
    torch.testing.assert_close(make_runner("red", restorer, settings)(case), expected, rtol=1e-4,
                               atol=1e-4 * float(expected.max()))
    with pytest.raises(ValueError, match="red_bsrem_beta must be > 0"):
        ClassicalSettings(red_bsrem_beta=0.0).validate()
    with pytest.raises(ValueError, match="dream_reconstruction must be one of 'osem', 'bsrem-rdp', got 'map'"):
        ClassicalSettings(dream_reconstruction="map").validate()
    with pytest.raises(ValueError, match="dream_rdp_gamma must be > 0"):
        ClassicalSettings(dream_rdp_gamma=0.0).validate()
