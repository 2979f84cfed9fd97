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
