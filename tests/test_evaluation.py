"""pettk.evaluation and pettk.models: held-out data, method runners, summary tables, registry."""

import math

import numpy as np
import pytest
import torch

import pettk.models
from pettk.evaluation import (
    CLASSICAL,
    DEFAULT_MODELS,
    HELD_OUT_SEED,
    LEARNED,
    METHODS,
    ClassicalSettings,
    EvalData,
    evaluate,
    load_method_model,
)
from pettk.evaluation.data import build_heldout, heldout_dataset_config
from pettk.evaluation.methods import make_runner
from pettk.evaluation.report import comparison_lines, markdown_table, summarise
from pettk.metrics import psnr


def _row(method, psnr_value, ssim_value=0.5, drf=20.0):
    return {"method": method, "drf": drf, "tracer": "fdg", "subject": "s", "slice": 0, "psnr": psnr_value,
            "ssim": ssim_value, "nrmse": 0.1, "seconds": 1.0}


def test_summary_mean_and_sample_std():
    rows = [_row("osem", 20.0, 0.5), _row("osem", 22.0, 0.7), _row("osem", 24.0, 0.9), _row("red", 25.0)]
    summary = summarise(rows)
    osem, red = summary
    assert (osem["method"], osem["n"]) == ("osem", 3)
    assert osem["psnr"] == pytest.approx(22.0) and osem["psnr_std"] == pytest.approx(2.0)  # ddof=1
    assert osem["ssim"] == pytest.approx(0.7) and osem["ssim_std"] == pytest.approx(0.2)
    assert red["n"] == 1 and red["psnr_std"] == 0.0
    table = markdown_table(summary, {"osem": "OSEM"})
    assert "| OSEM | 20 | fdg | 3 | 22.00 ± 2.00 | 0.700 ± 0.200 |" in table


def test_comparison_lines_say_when_a_prior_is_behind():
    summary = summarise([_row("osem", 20.0), _row("bsrem-rdp", 23.0), _row("red", 21.5)])
    (line,) = comparison_lines(summary, {"red": "RED", "osem": "OSEM", "bsrem-rdp": "BSREM"})
    assert line == "- RED (DRF 20, fdg): ahead of OSEM by 1.50 dB; behind BSREM by 1.50 dB in mean PSNR."


def test_heldout_seeds_are_disjoint_from_training():
    config = heldout_dataset_config(EvalData(n_subjects=3))
    assert config.seed == HELD_OUT_SEED and config.subject_splits() == ["test"] * 3
    with pytest.raises(TypeError, match="EvalData"):
        heldout_dataset_config({"n_subjects": 3})


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    data = EvalData(n_subjects=1, slices_per_subject=1, image_size=32, counts_per_slice=2e5)
    return build_heldout(tmp_path_factory.mktemp("heldout"), data)[20.0]


def test_low_dose_model_predicts_the_low_dose_counts(heldout):
    from pettk.evaluation import _cases

    ((drf, item, case),) = _cases({20.0: heldout}, torch.device("cpu"))
    ybar_full = case.model.forward(item["truth"])
    ybar_low = case.model_low.forward(item["truth"])
    assert torch.allclose(ybar_low * 20.0, ybar_full, rtol=1e-5)
    # the raw low-dose counts are integers whose mean matches the low-dose model
    assert torch.equal(case.y_low, case.y_low.round())
    assert float(case.y_low.sum()) == pytest.approx(float(ybar_low.sum()), rel=0.02)


def test_classical_runners_beat_a_blank_image(heldout):
    from pettk.evaluation import _cases

    ((_, _, case),) = _cases({20.0: heldout}, torch.device("cpu"))
    truth = case.truth.numpy()
    quick = ClassicalSettings(bsrem_iterations=60)  # the converged baseline is tested on its own below
    for method in CLASSICAL:
        image = np.asarray(make_runner(method, settings=quick)(case))
        assert image.shape == truth.shape and image.min() >= 0
        assert psnr(image, truth) > psnr(np.zeros_like(truth), truth) + 5, method


def test_settings_and_runner_errors():
    with pytest.raises(ValueError, match="osem_iterations must be an integer >= 1"):
        ClassicalSettings(osem_iterations=0).validate()
    with pytest.raises(ValueError, match="bsrem_beta must be > 0"):
        ClassicalSettings(bsrem_beta=-1.0).validate()
    with pytest.raises(ValueError, match="method must be one of"):
        make_runner("fbp")
    with pytest.raises(ValueError, match="needs a model"):
        make_runner("red")
    with pytest.raises(ValueError, match="takes no model"):
        load_method_model("osem")
    assert set(METHODS) == set(CLASSICAL) | set(LEARNED)


def test_evaluate_rejects_bad_methods_before_work(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate(tmp_path / "a", ("osem", "fancy"))
    with pytest.raises(ValueError, match="must not repeat"):
        evaluate(tmp_path / "b", ("osem", "osem"))
    with pytest.raises(ValueError, match="take no model"):
        evaluate(tmp_path / "c", ("osem",), checkpoints={"mlem": "x"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_model_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        pettk.models.load("nope")
    with pytest.raises(ValueError, match="method must be one of"):
        pettk.models.load_checkpoint_for("fbp", tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        pettk.models.load_checkpoint_for("red", tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="no red checkpoint"):
        pettk.models.load_checkpoint_for("red", tmp_path / "x.safetensors")
    assert set(pettk.models.available()) <= set(pettk.models.REGISTRY)
    assert math.isfinite(HELD_OUT_SEED)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_method_runs_on_cuda_like_on_the_cpu(tmp_path):
    """`pettk demo --device cuda`: the held-out cases, the classical methods and the shipped priors on
    CUDA tensors give the CPU's images (classical: to float tolerance; priors: same samples drawn from
    CPU generators, network arithmetic differs slightly)."""
    data = EvalData(n_subjects=1, slices_per_subject=1, drfs=(20.0,))
    methods = CLASSICAL + tuple(m for m in LEARNED if DEFAULT_MODELS[m] in pettk.models.available())
    psnrs = {}
    for device in ("cpu", "cuda"):
        summary = evaluate(tmp_path / device, methods, data, device=device, progress=False, write_nifti=False,
                           tune=False)
        psnrs[device] = {row["method"]: row["psnr"] for row in summary}
    assert set(psnrs["cuda"]) == set(methods)
    for method in methods:
        tolerance = 0.05 if method in CLASSICAL else 1.0
        assert abs(psnrs["cuda"][method] - psnrs["cpu"][method]) < tolerance, (method, psnrs)


def _tiny_case():
    """A 16 × 16 case (about 5·10⁴ full-dose counts, DRF 10) with attenuation-like normalisation
    and a background."""
    import pettk
    from pettk.evaluation.methods import Case
    from pettk.sim import shepp_logan_2d

    rng = np.random.default_rng(3)
    grid = pettk.ImageGrid((16, 16), 4.0)
    geometry = pettk.ParallelBeam2D(24, 25, 3.5)
    truth = torch.from_numpy(40.0 * shepp_logan_2d(grid))
    model = pettk.ForwardModel(pettk.Projector(grid, geometry), normalisation=rng.uniform(0.6, 1.0, geometry.shape),
                               additive=np.full(geometry.shape, 5.0))
    full = torch.poisson(model.forward(truth), generator=torch.Generator().manual_seed(0))
    y_low = pettk.sim.thin(full, 10.0, seed=1)
    return Case(y_low=y_low, model=model, drf=10.0, grid=grid, mr=truth.clone(), truth=truth)


def test_bsrem_rdp_baseline_is_the_converged_map_image():
    """The criterion: the objective's relative change over the last 10 epochs is <= the
    tolerance; the image is then within 1 % of an independent L-BFGS-B optimum."""
    from scipy.optimize import minimize

    import pettk
    from pettk.evaluation.methods import CHECK_EVERY, _rdp_for, converged_bsrem

    case = _tiny_case()
    settings = ClassicalSettings(bsrem_beta=0.3, rdp_gamma=2.0)
    history = []
    x = converged_bsrem(case, settings, history=history).double()
    (e1, phi1), (e2, phi2) = history[-2:]
    assert e2 - e1 == CHECK_EVERY and e2 < settings.bsrem_iterations
    assert abs(phi2 - phi1) <= settings.bsrem_tolerance * float(case.y_low.sum())

    model = case.model_low.to(dtype=torch.float64)
    y = case.y_low.double()
    prior = _rdp_for(case, settings.rdp_gamma)

    def negative_objective(flat):
        xt = torch.from_numpy(flat.reshape(case.grid.shape)).requires_grad_(True)
        value = pettk.poisson_nll(y, model.forward(xt)) + settings.bsrem_beta * prior.value(xt)
        value.backward()
        return float(value.detach()), xt.grad.numpy().ravel().copy()

    start = x.numpy().ravel()
    ref = minimize(negative_objective, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * start.size,
                   options=dict(maxiter=20000, ftol=1e-16, gtol=1e-13)).x
    assert np.linalg.norm(start - ref) / np.linalg.norm(ref) < 1e-2


def test_tuning_grid_extends_past_a_winning_end():
    from pettk.evaluation.tuning import _best_on_grid

    calls = []

    def score(v):
        calls.append(v)
        return -(math.log10(v) - 1.6) ** 2  # best at 10 ** 1.6 ≈ 40, past the grid's end

    best, scores = _best_on_grid(score, [0.1, 1.0, 10.0], extend=10 ** 0.5)
    assert best == pytest.approx(10 ** 1.5)
    assert max(scores) == pytest.approx(100.0)  # one more point past the best: an interior choice
    best, _ = _best_on_grid(lambda v: -abs(v - 1.0), [0.1, 1.0, 10.0], extend=10.0)
    assert best == 1.0
    best, scores = _best_on_grid(lambda v: v, [1.0, 2.0], extend=2.0, limit=2)
    assert best == 8.0 and len(scores) == 4  # stops after `limit` extensions


def test_classical_settings_reject_a_bad_bsrem_tolerance():
    with pytest.raises(ValueError, match="bsrem_tolerance must be > 0"):
        ClassicalSettings(bsrem_tolerance=float("nan")).validate()
    with pytest.raises(ValueError, match="bsrem_tolerance must be > 0"):
        ClassicalSettings(bsrem_tolerance=0.0).validate()
