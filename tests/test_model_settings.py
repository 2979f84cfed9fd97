"""Changing a loaded image prior's reconstruction settings (``pettk.models.with_settings``,
``pettk evaluate --model-setting``): values checked by the model's configuration, network fields
refused, bad specifications refused before any work."""

import pytest

from pettk.cli.evaluate import _model_settings
from pettk.evaluation import evaluate
from pettk.models import with_settings
from pettk.priors import RED, REDConfig
from pettk.priors.ddip import DDIP, DDIPConfig


@pytest.fixture(scope="module")
def ddip():
    config = DDIPConfig.TINY
    return DDIP(config, config.net.build())


def test_with_settings_changes_settings_and_shares_the_network(ddip):
    changed = with_settings(ddip, final_em_iterations=8, beta=0.25)
    assert changed.config.final_em_iterations == 8 and changed.config.beta == 0.25
    assert ddip.config.final_em_iterations == DDIPConfig.TINY.final_em_iterations   # the original is untouched
    assert changed.net is ddip.net
    assert with_settings(ddip) is ddip


def test_with_settings_refuses_unknown_fields_network_fields_bad_values_and_restorers(ddip):
    with pytest.raises(ValueError, match=r"no settings \['final_em'\]; its settings are .*final_em_iterations"):
        with_settings(ddip, final_em=8)
    with pytest.raises(ValueError, match="T is fixed by the pretrained model"):
        with_settings(ddip, T=ddip.config.T + 1)
    with pytest.raises(ValueError, match="final_em_iterations"):
        with_settings(ddip, final_em_iterations=-1)
    red = RED(REDConfig(), (32, 49))
    with pytest.raises(ValueError, match="RED model takes no setting changes"):
        with_settings(red, sampling_steps=1)


def test_cli_model_setting_specifications():
    assert _model_settings(["ddip.final_em_iterations=8", "ddip.beta=0.1", "pet-dds.axial_beta=0.3"]) == {
        "ddip": {"final_em_iterations": 8, "beta": 0.1}, "pet-dds": {"axial_beta": 0.3}}
    assert _model_settings(["ddip.mr_fallback=auto"]) == {"ddip": {"mr_fallback": "auto"}}   # not JSON: a string
    assert _model_settings(None) == {}
    for bad in ("ddip=8", "final_em_iterations=8", "ddip.final_em_iterations", "ddip.=3", ".x=3", "ddip.x="):
        with pytest.raises(SystemExit, match="METHOD.FIELD=VALUE"):
            _model_settings([bad])


def test_evaluate_refuses_settings_for_methods_not_evaluated_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"model settings given for \['ddip'\]"):
        evaluate(out, ("osem",), model_settings={"ddip": {"final_em_iterations": 8}})
    with pytest.raises(ValueError, match=r"model settings given for \['osem'\]"):
        evaluate(out, ("osem",), model_settings={"osem": {"iterations": 8}})
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# settings tuned per DRF (a model JSON's "settings_by_drf")
# ---------------------------------------------------------------------------------------------
def _with_table(model, path, table):
    """Save ``model`` to ``path`` with ``table`` as its JSON's settings_by_drf (as the shipped JSONs hold it)."""
    import json

    path = model.save(path)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["settings_by_drf"] = table
    meta_path.write_text(json.dumps(meta))
    return path


def test_tuned_settings_are_read_and_applied_per_drf(ddip, tmp_path):
    from pettk.models import settings_for_drf, tuned_settings

    path = _with_table(ddip, tmp_path / "d.safetensors", {"20": {"final_em_iterations": 8}, "100": {"beta": 0.5}})
    tuned = tuned_settings(path)
    assert tuned == {20.0: {"final_em_iterations": 8}, 100.0: {"beta": 0.5}}
    assert tuned_settings(ddip.save(tmp_path / "plain.safetensors")) == {}
    assert settings_for_drf(ddip, tuned, 20).config.final_em_iterations == 8
    at_100 = settings_for_drf(ddip, tuned, 100.0)
    assert at_100.config.beta == 0.5 and at_100.config.final_em_iterations == ddip.config.final_em_iterations
    # given changes win over the tuned ones
    assert settings_for_drf(ddip, tuned, 20, final_em_iterations=3).config.final_em_iterations == 3
    with pytest.raises(ValueError, match="has settings tuned for DRF 20, 100, not 4"):
        settings_for_drf(ddip, tuned, 4, "ddip-x")
    assert settings_for_drf(ddip, tuned, 4, strict=False) is ddip       # not strict: its own settings
    assert settings_for_drf(ddip, {}, 4) is ddip                        # a model without a table


def test_tuned_settings_refuse_bad_tables(ddip, tmp_path):
    from pettk.models import settings_for_drf, tuned_settings

    for i, table in enumerate(({"x": {"beta": 1}}, {"-20": {"beta": 1}}, {"20": 8}, [1, 2])):
        path = _with_table(ddip, tmp_path / f"bad{i}.safetensors", table)
        with pytest.raises(ValueError, match="settings_by_drf"):
            tuned_settings(path)
    path = _with_table(ddip, tmp_path / "value.safetensors", {"20": {"final_em_iterations": -1}})
    with pytest.raises(ValueError, match="final_em_iterations"):
        settings_for_drf(ddip, tuned_settings(path), 20)


def test_shipped_ddip_128_holds_its_per_drf_final_em_iterations():
    from pettk.models import load, tuned_settings

    assert tuned_settings("ddip-fdg-128") == {20.0: {"final_em_iterations": 8}, 100.0: {"final_em_iterations": 2}}
    assert tuned_settings("ddip-fdg") == {}
    assert load("ddip-fdg-128", drf=20).config.final_em_iterations == 8
    with pytest.raises(ValueError, match="not 4"):
        load("ddip-fdg-128", drf=4)


def test_evaluate_runs_each_drf_with_the_models_tuned_settings(ddip, tmp_path):
    import csv

    from pettk.evaluation import EvalData

    quick = with_settings(ddip, steps=4)
    table = _with_table(quick, tmp_path / "table.safetensors", {"20": {"final_em_iterations": 5}})
    plain = quick.save(tmp_path / "plain.safetensors")
    data = EvalData(n_subjects=1, slices_per_subject=1, drfs=(20.0, 100.0), image_size=32,
                    counts_per_slice=2e5)
    psnr = {}
    for name, checkpoint, changes in (("table", table, {}), ("given", plain, {"ddip": {"final_em_iterations": 5}})):
        out = tmp_path / name
        evaluate(out, ("ddip",), data, checkpoints={"ddip": checkpoint}, model_settings=changes, tune=False,
                 write_nifti=False, progress=False, cache_dir=tmp_path / "cache")   # one simulation
        with open(out / "slices.csv") as f:
            psnr[name] = {float(r["drf"]): float(r["psnr"]) for r in csv.DictReader(f)}
    assert psnr["table"][20.0] == pytest.approx(psnr["given"][20.0], abs=1e-9)   # the tuned 5 at DRF 20
    assert psnr["table"][100.0] != pytest.approx(psnr["given"][100.0], abs=1e-6)  # its own settings at DRF 100
    text = (tmp_path / "table" / "metrics.md").read_text()
    assert "ddip at DRF 20: the model's settings tuned for DRF 20 (final_em_iterations = 5)" in text


def test_recon_drf_and_model_setting_for_an_image_prior(ddip, tmp_path):
    import numpy as np

    import pettk
    from pettk.cli import main
    from pettk.io import load_nifti, save_nifti, save_sinogram

    grid = pettk.ImageGrid((32, 32), 4.0)
    geo = pettk.ParallelBeam2D(40, 47, 3.0)
    x = 5.0 * pettk.sim.shepp_logan_2d(grid)
    y = np.random.default_rng(0).poisson(pettk.Projector(grid, geo).forward(x)).astype(np.float32)
    sino = save_sinogram(tmp_path / "s.npz", y, geo, grid)
    mr = tmp_path / "mr.nii.gz"
    save_nifti(mr, (x > 0).astype(np.float32), grid)
    quick = with_settings(ddip, steps=3)
    table = _with_table(quick, tmp_path / "table.safetensors", {"20": {"final_em_iterations": 4}})
    plain = quick.save(tmp_path / "plain.safetensors")
    common = ["--method", "ddip", "--mr", str(mr), "--no-progress"]
    restorer = ["--method", "red", "--no-progress"]
    assert main(["recon", str(sino), "-o", str(tmp_path / "a.nii.gz"), "--model", str(table), "--drf", "20",
                 *common]) == 0
    assert main(["recon", str(sino), "-o", str(tmp_path / "b.nii.gz"), "--model", str(plain),
                 "--model-setting", "final_em_iterations=4", *common]) == 0
    assert main(["recon", str(sino), "-o", str(tmp_path / "c.nii.gz"), "--model", str(plain), *common]) == 0
    a, b, c = (load_nifti(tmp_path / f"{n}.nii.gz", ndim=2)[0] for n in "abc")
    assert np.array_equal(a, b) and not np.allclose(a, c)
    # refused before any work
    for args, words in ((["--model", str(table), "--drf", "4"], "tuned for DRF 20, not 4"),
                        (["--model", str(plain), "--drf", "20"], "no settings tuned per DRF"),
                        (["--model", str(plain), "--model-setting", "ddip.steps=4"], "takes FIELD=VALUE"),
                        (["--model", str(plain), "--model-setting", "final_em=4"], "no settings"),
                        (["--model-setting", "steps=4"], "is for the image priors")):
        with pytest.raises(SystemExit, match=words):
            options = restorer if "--model" not in args else common
            main(["recon", str(sino), "-o", str(tmp_path / "x.nii.gz"), *options, *args])
    assert not (tmp_path / "x.nii.gz").exists()
