"""Training in chunks (pettk.diffusion.chunks): a multi-stage run cut by time budgets and resumed
gives the weights of the uninterrupted run; the CLI reports a chunk that ended with exit status 75."""

import pytest
import torch

from pettk.cli import EXIT_CHUNK_ENDED, main
from pettk.diffusion import TrainingBudget, TrainingIncomplete
from pettk.priors.dream import DREAMConfig, train_dream
from pettk.priors.red import REDConfig, train_red
from pettk.sim.datasets import DatasetConfig, build_dataset

DRF = 20.0
DREAM_CONFIG = DREAMConfig.TINY.replace(pad_mode="multiple", crop_sizes=(32, 56), batch_sizes=(2, 2),
                                        curriculum=(0.5, 0.5), s1_steps=6, s2a_steps=4, s2b_steps=4, drf=DRF, seed=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunk_data")
    cfg = DatasetConfig(n_subjects=4, slices_per_subject=1, image_size=32, geometry="parallel", drfs=(DRF,),
                        counts_per_slice=2e4, reference_counts_factor=1.0, reference_iterations=1,
                        reference_subsets=2, split=(None, 1, 1), seed=0)
    build_dataset(root, cfg, progress=False)
    return root


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_budget_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="time_limit_s must be a positive number"):
        TrainingBudget(0, tmp_path)
    with pytest.raises(ValueError, match="time_limit_s must be a positive number"):
        TrainingBudget(float("nan"), tmp_path)
    with pytest.raises(TypeError, match="time_limit_s must be a number"):
        TrainingBudget("60", tmp_path)
    with pytest.raises(ValueError, match="needs an out_dir"):
        TrainingBudget(60.0, None)
    with pytest.raises(ValueError, match="resume=True needs an out_dir"):
        TrainingBudget(None, None, resume=True)
    assert TrainingBudget().remaining() is None
    assert 0 < TrainingBudget(5.0, tmp_path).remaining() <= 5.0


def test_dream_in_chunks_equals_one_run(data, tmp_path):
    """Three stages (s1, s2a, s2b) trained in chunks of growing length, each resumed from the
    checkpoints of the last, end with exactly the weights of one uninterrupted run."""
    whole = train_dream(DREAM_CONFIG, data, out_dir=tmp_path / "whole")
    limit, chunks, stages = 0.02, 0, set()
    while True:
        chunks += 1
        assert chunks < 60, "the chunks make no progress"
        try:
            chunked = train_dream(DREAM_CONFIG, data, out_dir=tmp_path / "chunked", resume=chunks > 1,
                                  time_limit_s=limit)
            break
        except TrainingIncomplete as stop:
            assert stop.stage in ("s1", "s2a", "s2b") and 0 <= stop.step < stop.steps
            assert stop.checkpoint == tmp_path / "chunked" / stop.stage / "checkpoint.safetensors"
            assert stop.checkpoint.is_file() and not (tmp_path / "chunked" / "dream.safetensors").exists()
            stages.add(stop.stage)
            limit *= 1.6
    assert chunks >= 2 and "s1" in stages
    a, b = _weights(whole.nets), _weights(chunked.nets)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert chunked.history["s2b_loss"] == whole.history["s2b_loss"]
    assert (tmp_path / "chunked" / "dream.safetensors").is_file()


def test_red_resume_finishes_an_interrupted_run(data, tmp_path):
    config = REDConfig.TINY.replace(ren_steps=3, dcn_steps=2, drf=DRF, seed=1)
    config = config.replace(net=config.net.replace(base_channels=4, channel_mults=(1, 2), attention_heads=1,
                                                   attention_head_channels=4))
    whole = train_red(config, data, out_dir=tmp_path / "whole")
    with pytest.raises(TrainingIncomplete, match="stage 'ren' at step 0 of 3"):
        train_red(config, data, out_dir=tmp_path / "cut", time_limit_s=1e-9)
    resumed = train_red(config, data, out_dir=tmp_path / "cut", resume=True)
    a, b = _weights(whole.ren), _weights(resumed.ren)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="resume=True needs an out_dir"):
        train_red(config, data, resume=True)


def test_cli_chunk_exit_status_and_resume(data, tmp_path):
    import json

    cfg = tmp_path / "dream.json"
    cfg.write_text(json.dumps({**DREAM_CONFIG.to_dict(), "s1_steps": 3, "s2a_steps": 2, "s2b_steps": 2}))
    out = tmp_path / "dream"
    args = ["train", "dream", "--data", str(data), "--config", str(cfg), "--output", str(out), "--no-progress"]
    assert main(args + ["--max-minutes", "1e-9"]) == EXIT_CHUNK_ENDED == 75
    assert (out / "s1" / "checkpoint.safetensors").is_file() and not (out / "dream.safetensors").exists()
    assert main(args + ["--resume"]) == 0
    assert (out / "dream.safetensors").is_file()
    for stage, steps in (("s1", 3), ("s2a", 2), ("s2b", 2)):
        assert json.loads((out / stage / "checkpoint.json").read_text())["step"] == steps
