"""Damaged files raise pettk's FileFormatError naming the file, never a raw third-party exception.

Each loader gets truncated copies of a good file (cut at many places) and copies with bytes
overwritten (seeded, deterministic): every case either loads or raises
:class:`pettk.io.FileFormatError` (a ValueError) whose message starts with / names the file. A
missing file stays a FileNotFoundError.
"""

import gc
import pickle

import numpy as np
import pytest
import torch

import pettk
from pettk.diffusion.train import TrainConfig, Trainer
from pettk.io import FileFormatError, load_checkpoint, load_nifti, save_checkpoint, save_nifti


def _variants(good: bytes, n_cuts: int, n_corrupt: int, corrupt_span: int, seed: int = 0):
    """``(label, bytes)``: ``good`` cut at ``n_cuts`` places and with 1-3 bytes overwritten at
    random places in its first ``corrupt_span`` bytes ``n_corrupt`` times."""
    rng = np.random.default_rng(seed)
    for cut in np.unique(np.linspace(0, len(good) - 1, n_cuts).astype(int)):
        yield f"cut{cut}", good[:cut]
    for i in range(n_corrupt):
        raw = bytearray(good)
        for pos in rng.integers(0, min(corrupt_span, len(raw)), rng.integers(1, 4)):
            raw[pos] = int(rng.integers(0, 256))
        yield f"corrupt{i}", bytes(raw)


def _loads_or_names_the_file(loader, path):
    try:
        loader(path)
    except FileFormatError as err:
        assert str(path) in str(err), str(err)
        return False
    return True


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_damaged_nifti_files(tmp_path, suffix):
    grid = pettk.ImageGrid((8, 7, 6), (2.0, 2.5, 3.0), origin_mm=(1.0, -2.0, 3.0))
    good = save_nifti(tmp_path / f"good{suffix}", np.random.default_rng(0).random(grid.shape), grid).read_bytes()
    span = 352 if suffix == ".nii" else len(good)  # the header, or anywhere in the compressed stream
    failed = 0
    for label, data in _variants(good, 40, 120, span):
        path = tmp_path / f"{label}{suffix}"
        path.write_bytes(data)
        failed += not _loads_or_names_the_file(load_nifti, path)
    assert failed >= 40  # every cut and many corruptions fail -- and each one as a FileFormatError
    with pytest.raises(FileNotFoundError):
        load_nifti(tmp_path / f"missing{suffix}")


def test_damaged_checkpoints(tmp_path):
    good_path = save_checkpoint(tmp_path / "good.safetensors", {"w": torch.arange(64.0), "i": torch.ones(3, 4).long()})
    good = good_path.read_bytes()
    good_path.with_suffix(".json").unlink()
    failed = 0
    for label, data in _variants(good, 30, 150, 160):  # the 8-byte length and the JSON header
        path = tmp_path / f"{label}.safetensors"
        path.write_bytes(data)
        failed += not _loads_or_names_the_file(load_checkpoint, path)
    assert failed >= 30
    # a pickled payload (torch.save, plain pickle) under a checkpoint's name is refused, never unpickled
    torch.save({"w": torch.ones(3)}, tmp_path / "torch-save.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    for name in ("torch-save", "pickle"):
        path = tmp_path / f"{name}.safetensors"
        with pytest.raises(FileFormatError, match=r"cannot read this checkpoint \(safetensors\)") as err:
            load_checkpoint(path)
        assert str(err.value).startswith(str(path))


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"x": torch.full((4,), float(i)), "y": torch.zeros(2)}


def _loss(model, batch, generator, part):
    return torch.mean((model(batch["x"][part]) - batch["y"][part]) ** 2)


def _trainer(model, out_dir=None):
    return Trainer(model, _loss, _Pairs(), TrainConfig(steps=3, batch_size=4, seed=1), out_dir=out_dir,
                   progress=False)


def test_damaged_training_checkpoints(tmp_path):
    _trainer(_model(), tmp_path).fit()
    path, meta = tmp_path / "checkpoint.safetensors", tmp_path / "checkpoint.json"
    good, good_meta = path.read_bytes(), meta.read_text()
    _trainer(_model(1)).load(path)  # the good one loads

    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(FileFormatError, match=r"cannot read this training checkpoint \(safetensors\)") as err:
        _trainer(_model()).load(path)
    assert str(err.value).startswith(str(path))
    path.write_bytes(good)
    for text, match in (("{", r"\(JSONDecodeError"), ("[]", "not a pettk training checkpoint's metadata"),
                        ('{"step": 3}', r"\(KeyError: 'optim_param_groups'")):
        meta.write_text(text)
        with pytest.raises(FileFormatError, match=match) as err:
            _trainer(_model()).load(path)
        assert str(err.value).startswith(str(meta))
    meta.write_text(good_meta)
    # a checkpoint of another model: named, with the reason
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    with pytest.raises(FileFormatError, match=r"does it belong to this model and optimiser\?\) \(RuntimeError: "
                                              "Error"):
        _trainer(other).load(path)
    meta.unlink()
    with pytest.raises(FileNotFoundError, match="no training checkpoint metadata at"):
        _trainer(_model()).load(path)
    with pytest.raises(FileNotFoundError, match="no training checkpoint at"):
        _trainer(_model()).load(tmp_path / "missing.safetensors")


@pytest.mark.filterwarnings("ignore:.*were dropped:RuntimeWarning")  # a loadable damaged file may drop events
@pytest.mark.filterwarnings("error::ResourceWarning")  # every failed open closes its file
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("fmt", ["binary", "ndjson"])
def test_damaged_petsird_files(tmp_path, fmt):
    pytest.importorskip("petsird")
    pytest.importorskip("petsird.helpers.generator")
    from test_petsird import GRID, ring_header

    from pettk.io.petsird import PETSIRDFile, PETSIRDFormatError, PETSIRDScanner, simulate_petsird_events, write_petsird

    header = ring_header()
    blob = np.zeros(GRID.shape)
    blob[13:17, 8:11, 3:5] = 1.0
    events = simulate_petsird_events(PETSIRDScanner(header), blob, GRID, 1500, seed=3)
    good = write_petsird(tmp_path / f"good.{fmt}", header, events, n_time_blocks=3, format=fmt).read_bytes()

    def count(path):
        with PETSIRDFile(path) as f:
            f.count_events()

    failed = 0
    for label, data in _variants(good, 40, 80, len(good)):
        path = tmp_path / f"{label}.{fmt}"
        path.write_bytes(data)
        failed += not _loads_or_names_the_file(count, path)
    assert failed >= 39
    gc.collect()  # an unclosed file would warn here
    assert issubclass(PETSIRDFormatError, FileFormatError)
