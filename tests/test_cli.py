"""The pettk command line."""

import re
import shutil
import subprocess
import sys

import matplotlib.image as mpimg
import pytest
import torch

import pettk
from pettk.cli import main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pettk {pettk.__version__}"


@pytest.mark.skipif(shutil.which("pettk") is None, reason="pettk console script not installed")
def test_console_script_version():
    out = subprocess.run(["pettk", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pettk {pettk.__version__}"


def test_projector_demo_writes_figure(tmp_path, capsys):
    assert main(["demo", "--projector", "--output", str(tmp_path / "out")]) == 0
    png = tmp_path / "out" / "projector.png"
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 1000
    # no temporary files are left behind
    assert [p.name for p in png.parent.iterdir()] == ["projector.png"]
    out = capsys.readouterr().out
    assert "wrote" in out and "forward" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "pettk.cli", "--version"], capture_output=True, text=True, check=True)
    assert pettk.__version__ in out.stdout


@pytest.mark.parametrize("algorithm", ["osem", "mlem", "bsrem", "osl-map", "fbp"])
def test_recon_command_writes_nifti(tmp_path, algorithm):
    import numpy as np

    from pettk.io import load_nifti, save_sinogram
    from pettk.sim import shepp_logan_2d

    grid = pettk.ImageGrid((32, 32), 4.0)
    geo = pettk.ParallelBeam2D(40, 47, 3.0)
    x = 5.0 * shepp_logan_2d(grid)
    y = np.random.default_rng(0).poisson(pettk.Projector(grid, geo).forward(x)).astype(np.float32)
    save_sinogram(tmp_path / "s.npz", y, geo, grid, mu=np.full(grid.shape, 0.0))
    out = tmp_path / f"{algorithm}.nii.gz"
    code = main(["recon", str(tmp_path / "s.npz"), "-o", str(out), "-a", algorithm, "-n", "5", "-s", "4",
                 "--beta", "0.05", "--post-filter-mm", "4", "--no-progress"])
    assert code == 0
    image, g = load_nifti(out, ndim=2)
    assert g == grid
    assert np.corrcoef(image.ravel(), x.ravel())[0, 1] > 0.8  # a smoke test: algorithms are tested elsewhere


def test_recon_command_rejects_bad_output(tmp_path):
    with pytest.raises(SystemExit, match="--output must end in .nii or .nii.gz"):
        main(["recon", "s.npz", "-o", str(tmp_path / "x.png")])


def _tiny_sinogram(path, **extra):
    import numpy as np

    from pettk.io import save_sinogram

    grid = pettk.ImageGrid((16, 16), 4.0)
    geo = pettk.ParallelBeam2D(20, 23, 3.0)
    y = np.random.default_rng(0).poisson(np.full(geo.shape, 5.0)).astype(np.float32)
    save_sinogram(path, y, geo, grid, **extra)
    return path


@pytest.mark.parametrize("args, words", [
    (["--post-filter-mm", "1e300"], "far larger than the image"),
    (["--post-filter-mm", "nan"], "--post-filter-mm must be"),
    (["--psf-mm", "nan"], "--psf-mm must be"),
    (["--beta", "-1"], "--beta must be"),
    (["--gamma", "inf"], "--gamma must be"),
])
def test_recon_checks_numbers_before_work(tmp_path, args, words, monkeypatch):
    """Issue 31 item 5: bad numbers fail as one clean line before any reconstruction."""
    import pettk.recon

    sino = _tiny_sinogram(tmp_path / "s.npz")
    monkeypatch.setattr(pettk.recon, "osem", lambda *a, **k: pytest.fail("reconstruction ran before the check"))
    with pytest.raises(SystemExit, match=r"^pettk recon: .*" + re.escape(words)):
        main(["recon", str(sino), "-o", str(tmp_path / "x.nii.gz"), "--no-progress", *args])


def test_recon_errors_are_one_clean_line(tmp_path, monkeypatch):
    import numpy as np

    import pettk.recon

    monkeypatch.setattr(pettk.recon, "osem", lambda *a, **k: pytest.fail("reconstruction ran before the check"))
    sino = _tiny_sinogram(tmp_path / "s.npz")
    blocker = tmp_path / "file.nii"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="lies inside .*file.nii, which is a file"):
        main(["recon", str(sino), "-o", str(blocker / "out.nii.gz")])
    folder = tmp_path / "d.nii"
    folder.mkdir()
    with pytest.raises(SystemExit, match="is a folder; give a file name"):
        main(["recon", str(sino), "-o", str(folder)])
    with pytest.raises(SystemExit, match=r"^pettk recon: .*missing\.npz"):
        main(["recon", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "x.nii.gz")])
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, prompts=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SystemExit, match=r"^pettk recon: "):
        main(["recon", str(pickled), "-o", str(tmp_path / "x.nii.gz")])
    mu = tmp_path / "mu.nii.gz"
    from pettk.io import save_nifti

    save_nifti(mu, np.zeros((8, 8), np.float32), pettk.ImageGrid((8, 8), 4.0))
    with pytest.raises(SystemExit, match=r"^pettk recon: .*mu-map"):
        main(["recon", str(sino), "-o", str(tmp_path / "x.nii.gz"), "--mu", str(mu)])


def test_train_config_must_be_an_object(tmp_path):
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"^pettk train: .*--config .* must hold a JSON object"):
        main(["train", "diffusion", "--config", str(bad), "-o", str(tmp_path / "out")])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SystemExit, match=r"^pettk train: .*broken.json"):
        main(["train", "diffusion", "--config", str(broken), "-o", str(tmp_path / "out")])


def test_simulate_then_train_diffusion(tmp_path):
    import json

    from pettk.diffusion.image_model import load_image_diffusion

    data = tmp_path / "data"
    assert main(["simulate", str(data), "--subjects", "3", "--slices", "2", "--size", "32", "--drf", "4",
                 "--counts", "1e5", "--validation", "1", "--test", "1", "--no-progress"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert len(manifest["subjects"]) == 3
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"train": {"batch_size": 4, "checkpoint_every": 5}}))
    out = tmp_path / "model"
    assert main(["train", "diffusion", "--data", str(data), "--config", str(config), "--steps", "10",
                 "--output", str(out), "--no-progress"]) == 0
    model, schedule, cfg = load_image_diffusion(out / "model.safetensors")
    assert cfg["train"]["steps"] == 10 and schedule.T == 200
    x = torch.zeros(1, 1, 32, 32)
    assert model(x, torch.tensor([5])).shape == (1, 1, 32, 32)
    # resume with more steps continues from step 10
    assert main(["train", "diffusion", "--data", str(data), "--config", str(config), "--steps", "12",
                 "--output", str(out), "--resume", "--no-progress"]) == 0
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["step"] == 12
    # a time-limited chunk of a longer run (with augmentation) stops early, writes its weights, and resumes
    config.write_text(json.dumps({"train": {"batch_size": 4, "checkpoint_every": 5}, "data": {"augment": "default"}}))
    chunk = tmp_path / "chunk"
    assert main(["train", "diffusion", "--data", str(data), "--config", str(config), "--steps", "400",
                 "--output", str(chunk), "--max-minutes", "0.002", "--no-progress"]) == 75  # EX_TEMPFAIL
    from pettk.io.checkpoint import load_checkpoint

    _, meta = load_checkpoint(chunk / "model.safetensors")
    assert 0 < meta["step"] < 400 and meta["step"] == json.loads((chunk / "checkpoint.json").read_text())["step"]
    assert main(["train", "diffusion", "--data", str(data), "--config", str(config), "--steps", str(meta["step"] + 2),
                 "--output", str(chunk), "--resume", "--no-progress"]) == 0
    assert json.loads((chunk / "checkpoint.json").read_text())["step"] == meta["step"] + 2
    with pytest.raises(SystemExit, match="--max-minutes takes a positive number of minutes, got -5"):
        main(["train", "red", "--data", str(data), "--output", str(out), "--max-minutes", "-5"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trian": {}}))
    with pytest.raises(SystemExit, match="unknown configuration key 'trian'"):
        main(["train", "diffusion", "--data", str(data), "--config", str(bad), "--output", str(out)])


def test_train_red_command(tmp_path):
    from pettk.priors.red import RED

    data = tmp_path / "data"
    assert main(["simulate", str(data), "--subjects", "3", "--slices", "1", "--size", "32", "--geometry", "parallel",
                 "--drf", "20", "--counts", "2e4", "--validation", "1", "--test", "1", "--no-progress"]) == 0
    out = tmp_path / "red"
    assert main(["train", "red", "--data", str(data), "--drf", "20", "--steps", "4", "--output", str(out),
                 "--no-progress"]) == 0
    red = RED.load(out / "red.safetensors")
    assert red.config.drf == 20 and red.config.ren_steps == 4
    with pytest.raises(SystemExit, match="unknown configuration keys"):
        cfg = tmp_path / "bad.json"
        cfg.write_text('{"nope": 1}')
        main(["train", "red", "--data", str(data), "--config", str(cfg), "--output", str(out)])
    net_cfg = tmp_path / "net.json"
    net_cfg.write_text('{"net": {"base_channels": 4, "channel_mults": [1, 2]}, "ren_steps": 2, "dcn_steps": 1}')
    out2 = tmp_path / "red2"
    assert main(["train", "red", "--data", str(data), "--config", str(net_cfg), "--output", str(out2),
                 "--no-progress"]) == 0
    red2 = RED.load(out2 / "red.safetensors")
    assert (red2.config.net.base_channels, red2.config.net.channel_mults) == (4, (1, 2))
    with pytest.raises(SystemExit, match="unknown network keys"):
        net_cfg.write_text('{"net": {"widht": 4}}')
        main(["train", "red", "--data", str(data), "--config", str(net_cfg), "--output", str(out2)])


def test_evaluate_methods_match_the_cli():
    from pettk.cli import EVALUATE_METHODS
    from pettk.evaluation import METHODS

    assert EVALUATE_METHODS == METHODS


def test_evaluate_writes_tables_figure_and_nifti(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "-o", str(out), "--methods", "osem", "mlem", "--subjects", "2", "--slices", "1",
                 "--no-tune", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "lesions.csv", "metrics.csv", "metrics.md", "nifti",
                                                     "slices.csv"]
    table = (out / "metrics.md").read_text()
    assert "| OSEM + filter | 20 | fdg | 2 |" in table and "| MLEM | 20 | fdg | 2 |" in table
    rows = (out / "slices.csv").read_text().splitlines()
    assert rows[0] == "method,drf,tracer,subject,slice,psnr,ssim,nrmse,seconds" and len(rows) == 1 + 2 * 2
    assert len(list((out / "nifti").glob("*.nii.gz"))) == 4 + 2 * 2       # methods, truth and reference
    from pettk.io import load_nifti

    subject = rows[1].split(",")[3]
    truth, _ = load_nifti(out / "nifti" / f"truth_{subject}.nii.gz")
    osem, _ = load_nifti(out / "nifti" / f"osem_drf20_{subject}.nii.gz")
    assert truth.shape == osem.shape and truth.max() > 0 and (out / "nifti" / f"reference_{subject}.nii.gz").is_file()
    assert "OSEM + filter" in capsys.readouterr().out


def test_evaluate_out_of_family_anatomy(tmp_path):
    """Issue 21 item 6: the held-out mode with another anatomy family (v2-shifted)."""
    out = tmp_path / "ev"
    assert main(["evaluate", "-o", str(out), "--methods", "osem", "--subjects", "1", "--slices", "1",
                 "--anatomy", "v2-shifted", "--no-tune", "--no-progress"]) == 0
    assert "v2-shifted anatomy" in (out / "metrics.md").read_text()
    with pytest.raises(SystemExit, match="drop --anatomy"):
        main(["evaluate", "-o", str(tmp_path / "x"), "--data", str(tmp_path), "--anatomy", "v2"])


def test_evaluate_rejects_bad_checkpoint_spec(tmp_path):
    with pytest.raises(SystemExit, match="METHOD=PATH"):
        main(["evaluate", "-o", str(tmp_path), "--methods", "osem", "--checkpoint", "red"])
    with pytest.raises(SystemExit, match="take no model"):
        main(["evaluate", "-o", str(tmp_path), "--methods", "osem", "--checkpoint", "osem=x.safetensors"])


@pytest.mark.parametrize("kind", ["dream", "ddip", "legopet"])
def test_train_prior_argument_errors(kind, tmp_path):
    with pytest.raises(SystemExit, match="--data must name a data set"):
        main(["train", kind, "-o", str(tmp_path)])
    with pytest.raises(SystemExit, match="set steps and DRF in --config"):
        main(["train", kind, "-o", str(tmp_path), "--steps", "5"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["red", "dream", "ddip", "legopet"])
def test_train_device_is_checked_before_training(kind, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="--device must be a torch device.*'gpu0'"):
        main(["train", kind, "--data", str(tmp_path), "-o", str(out), "--device", "gpu0"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="torch sees no CUDA device"):
            main(["train", kind, "--data", str(tmp_path), "-o", str(out), "--device", "cuda"])
    assert not out.exists()


def test_train_device_default_follows_torch():
    import argparse

    from pettk.cli import _train_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert _train_device(argparse.Namespace(device="auto")).type == expected
    assert _train_device(argparse.Namespace(device="cpu")) == torch.device("cpu")
