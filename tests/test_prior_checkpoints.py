"""Periodic checkpoints of the prior trainers (RED, DREAM, LegoPET; DDIP's field): ``checkpoint_every`` reaches
each stage's :class:`~pettk.diffusion.train.TrainConfig`, and a run killed mid-stage without warning
(SIGKILL: no final checkpoint, emulated by an exception from the trainer's step) resumes from the
last periodic checkpoint and ends with the loss curves and weights of the uninterrupted run."""

import json

import pytest
import torch

from pettk.diffusion.train import Trainer
from pettk.priors.dream import DREAMConfig, train_dream
from pettk.priors.legopet import LegoPETConfig, train_legopet
from pettk.priors.red import REDConfig, train_red

DRF = 20.0
EVERY = 2  # the periodic checkpoint interval of the tiny runs (steps)

_red = REDConfig.TINY.replace(ren_steps=5, dcn_steps=5, batch_size=2, drf=DRF, seed=1, checkpoint_every=EVERY)
RED_CONFIG = _red.replace(net=_red.net.replace(base_channels=4, channel_mults=(1, 2), attention_heads=1,
                                               attention_head_channels=4))
DREAM_CONFIG = DREAMConfig.TINY.replace(pad_mode="multiple", crop_sizes=(32, 32), batch_sizes=(2, 2),
                                        curriculum=(0.5, 0.5), s1_steps=5, s2a_steps=3, s2b_steps=5, drf=DRF,
                                        seed=3, checkpoint_every=EVERY)
LEGOPET_CONFIG = LegoPETConfig.TINY.replace(pnpnet_steps=5, cdpm_steps=5, batch_size=2, warmup_steps=2,
                                            checkpoint_every=EVERY)


class _Killed(Exception):
    """Stands for SIGKILL: unlike KeyboardInterrupt (SIGTERM), the trainer writes nothing on it."""


def _kill(monkeypatch, stage: str, at_step: int) -> None:
    """Make the trainer of ``stage`` (its output folder's name) die once ``at_step`` steps are done."""
    step = Trainer.train_step

    def dying(self):
        if self.out_dir is not None and self.out_dir.name == stage and self.step == at_step:
            raise _Killed(stage)
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", dying)


def _step_on_disk(folder, stage: str) -> int:
    return json.loads((folder / stage / "checkpoint.json").read_text())["step"]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], rtol=0, atol=0, msg=key)


def _killed_then_resumed(train, config, data, tmp_path, monkeypatch, stage, at_step, model_file):
    """Train uninterrupted; train again killed in ``stage`` after ``at_step`` steps; resume. Returns
    (uninterrupted model, resumed model, folder of the killed run)."""
    whole = train(config, data, out_dir=tmp_path / "whole")
    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        _kill(patch, stage, at_step)
        with pytest.raises(_Killed):
            train(config, data, out_dir=cut)
    assert not (cut / model_file).exists()
    # the last periodic checkpoint survives the kill: at_step rounded down to a multiple of EVERY
    assert _step_on_disk(cut, stage) == at_step // EVERY * EVERY < at_step
    resumed = train(config, data, out_dir=cut, resume=True)
    assert (cut / model_file).is_file()
    return whole, resumed, cut


@pytest.mark.parametrize("cls", [REDConfig, DREAMConfig, LegoPETConfig])
def test_checkpoint_every_is_a_checked_field_passed_to_every_stage(cls):
    stages = {REDConfig: ("ren", "dcn"), DREAMConfig: ("s1", "s2a", "s2b"), LegoPETConfig: ("pnpnet", "cdpm")}[cls]
    assert cls.TINY.checkpoint_every == 200
    assert (cls.GPU.checkpoint_every, cls.FULL.checkpoint_every) == (1000, 5000)
    for stage in stages:
        assert cls.TINY.train_config(stage).checkpoint_every == 200
        assert cls.TINY.replace(checkpoint_every=0).train_config(stage).checkpoint_every == 0
    old = cls.TINY.to_dict()
    del old["checkpoint_every"]  # a configuration written before the field existed
    assert cls.from_dict(old).checkpoint_every == 200
    assert cls.from_dict({**old, "checkpoint_every": 7}).checkpoint_every == 7
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match="checkpoint_every must be an int >= 0"):
            cls.TINY.replace(checkpoint_every=bad).validate()


def test_ddip_checkpoint_every_is_a_checked_field():
    from pettk.priors.ddip import DDIPConfig

    assert (DDIPConfig.TINY.checkpoint_every, DDIPConfig.GPU.checkpoint_every, DDIPConfig.FULL.checkpoint_every) == (
        200, 1000, 5000)
    assert DDIPConfig.TINY.train_config().checkpoint_every == 200
    assert DDIPConfig.TINY.replace(checkpoint_every=0).train_config().checkpoint_every == 0
    old = DDIPConfig.TINY.to_dict()
    del old["checkpoint_every"]  # a configuration written before the field existed (the shipped models')
    assert DDIPConfig.from_dict(old).checkpoint_every == 200
    for bad in (-1, 2.5, None):
        with pytest.raises((ValueError, TypeError), match="checkpoint_every"):
            DDIPConfig.TINY.replace(checkpoint_every=bad).validate()


def test_red_killed_mid_stage_resumes_from_the_periodic_checkpoint(restorer_data, tmp_path, monkeypatch):
    whole, resumed, cut = _killed_then_resumed(train_red, RED_CONFIG, restorer_data, tmp_path, monkeypatch,
                                               "dcn", 3, "red.safetensors")
    assert _step_on_disk(cut, "ren") == 5 and _step_on_disk(cut, "dcn") == 5
    assert len(whole.history["dcn_loss"]) == 5
    assert resumed.history == whole.history
    _assert_same_weights(whole.ren, resumed.ren)
    _assert_same_weights(whole.dcn, resumed.dcn)
    # the checkpoints change no result: the same run without checkpoints or output folder
    plain = train_red(RED_CONFIG.replace(checkpoint_every=0), restorer_data)
    assert plain.history == whole.history
    _assert_same_weights(whole.dcn, plain.dcn)


def test_red_without_periodic_checkpoints_a_kill_loses_the_stage(restorer_data, tmp_path, monkeypatch):
    """The behaviour before periodic checkpoints (checkpoint_every=0): nothing of the stage survives."""
    with monkeypatch.context() as patch:
        _kill(patch, "ren", 3)
        with pytest.raises(_Killed):
            train_red(RED_CONFIG.replace(checkpoint_every=0), restorer_data, out_dir=tmp_path)
    assert not (tmp_path / "ren" / "checkpoint.safetensors").exists()


def test_dream_killed_mid_stage_resumes_from_the_periodic_checkpoint(restorer_data, tmp_path, monkeypatch):
    whole, resumed, cut = _killed_then_resumed(train_dream, DREAM_CONFIG, restorer_data, tmp_path, monkeypatch,
                                               "s2b", 3, "dream.safetensors")
    assert [_step_on_disk(cut, s) for s in ("s1", "s2a", "s2b")] == [5, 3, 5]
    assert set(whole.history) == {"s1_loss", "s2a_loss", "s2b_loss"} and len(whole.history["s2b_loss"]) == 5
    assert resumed.history == whole.history
    _assert_same_weights(whole.nets, resumed.nets)


def test_dream_killed_in_its_first_stage(restorer_data, tmp_path, monkeypatch):
    whole, resumed, cut = _killed_then_resumed(train_dream, DREAM_CONFIG, restorer_data, tmp_path, monkeypatch,
                                               "s1", 3, "dream.safetensors")
    assert resumed.history == whole.history
    _assert_same_weights(whole.nets, resumed.nets)


def test_legopet_killed_mid_stage_resumes_from_the_periodic_checkpoint(restorer_data, tmp_path, monkeypatch):
    whole, resumed, cut = _killed_then_resumed(train_legopet, LEGOPET_CONFIG, restorer_data, tmp_path,
                                               monkeypatch, "cdpm", 3, "legopet.safetensors")
    assert _step_on_disk(cut, "pnpnet") == 5 and _step_on_disk(cut, "cdpm") == 5
    assert len(whole.history["cdpm_loss"]) == 5
    assert resumed.history == whole.history
    _assert_same_weights(whole.cdpm, resumed.cdpm)
    _assert_same_weights(whole.pnpnet, resumed.pnpnet)
