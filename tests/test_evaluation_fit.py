"""pettk.evaluation.fit: the image size a learned model fixes (sinogram restorers included: their
sinogram shape implies the geometry and, for parallel beam, the image size) and the refusal of a
model that does not fit the evaluated data, before any work."""

import pytest

from pettk import models
from pettk.cli import main
from pettk.evaluation import EvalData, check_models_fit_data, evaluate, model_image_size
from pettk.evaluation.fit import implied_image_size
from pettk.priors.dream import DREAM, DREAMConfig
from pettk.priors.red import RED, REDConfig
from pettk.sim.datasets import DatasetConfig


@pytest.fixture(scope="module")
def shipped():
    return {name: models.load(name) for name in ("red-drf20", "dream-drf20", "dream-drf20-128", "ddip-fdg",
                                                 "legopet")}


def test_implied_image_size_of_pettk_sinograms():
    for n in (8, 32, 63, 64, 128):
        shape = DatasetConfig(image_size=n, geometry="parallel").make_geometry().shape
        assert implied_image_size(shape) == n
    assert implied_image_size((64, 97)) == 64 and implied_image_size((32, 49)) == 32
    assert implied_image_size((128, 193)) == 128
    # the mmr-like direct plane is the same at every image size: it implies none
    for n in (64, 128):
        assert DatasetConfig(image_size=n, geometry="mmr-like").make_geometry().shape == (224, 129)
    assert implied_image_size((224, 129)) is None
    for shape in ((64, 96), (64, 98), (40, 50), (0, 1), (64,)):
        assert implied_image_size(shape) is None, shape


def test_model_image_size_of_every_kind_of_model(shipped):
    assert model_image_size(shipped["red-drf20"]) == (64, 64)          # (64, 97) sinograms: parallel 64²
    assert model_image_size(shipped["dream-drf20"]) == (64, 64)
    assert model_image_size(shipped["dream-drf20-128"]) is None         # mmr-like plane: any image size
    assert model_image_size(shipped["ddip-fdg"]) == (64, 64)            # an image prior: its U-Net's size
    assert model_image_size(shipped["legopet"]) is None                 # checked by its sinogram instead
    # in-memory restorers of pettk's parallel 32² data and of a layout no pettk data set has
    red_tiny = REDConfig.TINY.replace(net=REDConfig.TINY.net.replace(base_channels=4, channel_mults=(1, 2),
                                                                     attention_heads=1, attention_head_channels=4))
    assert model_image_size(RED(red_tiny, (32, 49))) == (32, 32)
    assert model_image_size(DREAM(DREAMConfig.TINY, (32, 49))) == (32, 32)
    assert model_image_size(DREAM(DREAMConfig.TINY, (40, 50))) is None
    assert model_image_size(object()) is None


def test_check_models_fit_data(shipped):
    fine = {"red": shipped["red-drf20"], "dream": shipped["dream-drf20"], "ddip": shipped["ddip-fdg"],
            "legopet": shipped["legopet"]}
    check_models_fit_data(fine, 64, (64, 97))                          # the default held-out data
    check_models_fit_data({"dream": shipped["dream-drf20-128"]}, 128, (224, 129))
    check_models_fit_data({"dream": shipped["dream-drf20-128"]}, 64, (224, 129))   # any size on the plane
    with pytest.raises(ValueError, match=r"^the red model was trained on 64 x 64 images but the evaluated data "
                                         r"are 128 x 128; .*shipped: red-drf20( / [a-z0-9-]+)*\)"):
        check_models_fit_data({"red": shipped["red-drf20"]}, 128, (128, 193))
    with pytest.raises(ValueError, match=r"^the dream model was trained on 224 x 129 sinograms \(the mmr-like direct "
                                         r"plane\) but the evaluated data's are 64 x 97 \(parallel beam of 64 x 64 "
                                         r"images\); give data of the model's geometry"):
        check_models_fit_data({"dream": shipped["dream-drf20-128"]}, 64, (64, 97))
    with pytest.raises(ValueError, match=r"^the dream model was trained on 64 x 97 sinograms \(parallel beam of 64 x "
                                         r"64 images\) but the evaluated data's are 224 x 129 \(the mmr-like direct"):
        check_models_fit_data({"dream": shipped["dream-drf20"]}, 64, (224, 129))
    with pytest.raises(ValueError, match=r"^the legopet model was trained on 64 x 97 sinograms"):
        check_models_fit_data({"legopet": shipped["legopet"]}, 64, (224, 129))
    with pytest.raises(ValueError, match=r"trained on 40 x 50 sinograms \(n_views x n_radial\)"):
        check_models_fit_data({"dream": DREAM(DREAMConfig.TINY, (40, 50))}, 64, (64, 97))
    # the restorers' DRF (one model per DRF) against the evaluated DRFs; image priors take any
    check_models_fit_data({"red": shipped["red-drf20"], "ddip": shipped["ddip-fdg"]}, 64, (64, 97), drfs=(20.0,))
    check_models_fit_data({"ddip": shipped["ddip-fdg"]}, 64, (64, 97), drfs=(4.0, 100.0))
    with pytest.raises(ValueError, match=r"^the dream model restores DRF 20 data \(one model per DRF\) but DRF 4, "
                                         r"100 is evaluated too; evaluate its DRF only \(--drf 20\).*dream-drf100-128"):
        check_models_fit_data({"dream": shipped["dream-drf20"]}, 64, (64, 97), drfs=(4.0, 20.0, 100.0))


def test_evaluate_refuses_a_restorer_of_other_data_before_any_work(tmp_path, restorer_data, monkeypatch):
    import pettk.evaluation as evaluation

    def no_work(*args, **kwargs):
        raise AssertionError("simulated or read data before checking the models")

    monkeypatch.setattr(evaluation, "build_heldout", no_work)
    monkeypatch.setattr(evaluation, "open_split", no_work)
    out = tmp_path / "ev"
    # simulated held-out data (64² parallel beam by default) and the 128² model of the mmr-like plane
    with pytest.raises(ValueError, match=r"the dream model was trained on 224 x 129 sinograms .* evaluated data's are "
                                         r"64 x 97"):
        evaluate(out, ("dream",), EvalData(n_subjects=1, slices_per_subject=1),
                 checkpoints={"dream": "dream-drf20-128"})
    # a data set folder (32² parallel beam): the 64² restorer implies 64² images
    with pytest.raises(ValueError, match=r"the red model was trained on 64 x 64 images but the evaluated data are "
                                         r"32 x 32"):
        evaluate(out, ("osem", "red"), data_dir=restorer_data, checkpoints={"red": "red-drf20"})
    # a restorer of DRF 20 asked for DRF 100 too: refused before the tuning and the restoring
    with pytest.raises(ValueError, match=r"the red model restores DRF 20 data .* but DRF 100 is evaluated too"):
        evaluate(out, ("red",), EvalData(n_subjects=1, slices_per_subject=1, drfs=(20.0, 100.0)))
    assert not out.exists()
    # a fitting restorer passes the check and reaches the data
    with pytest.raises(AssertionError, match="simulated or read data"):
        evaluate(out, ("dream",), EvalData(n_subjects=1, slices_per_subject=1), checkpoints={"dream": "dream-drf20"},
                 tune=False)


def test_cli_evaluate_names_the_mismatched_restorer(tmp_path):
    with pytest.raises(SystemExit, match=r"^pettk evaluate: the dream model was trained on 224 x 129 sinograms"):
        main(["evaluate", "-o", str(tmp_path / "ev"), "--methods", "dream", "--checkpoint", "dream=dream-drf20-128",
              "--no-tune", "--no-progress"])
    assert not (tmp_path / "ev").exists()
