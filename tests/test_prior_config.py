"""The shared declarative configuration of the learned priors (pettk.priors._config)."""

import dataclasses
import json
from dataclasses import dataclass

import pytest

from pettk.priors._checkpoint import load_networks, load_prior, save_networks
from pettk.priors._config import Any, Bool, Choice, Int, Nested, PriorConfig, Real, checked
from pettk.priors._data import TensorPairs, read_manifest


@dataclass(frozen=True)
class _Net:
    width: int = 4
    sizes: tuple = (1, 2)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class _Config(PriorConfig):
    _name = "Toy"
    _presets = {"tiny": "TINY", "big": "BIG"}
    _default_preset = "TINY"

    net: _Net = checked(_Net(), Nested(_Net))
    steps: int = checked(10, Int(1))
    seed: int = checked(0, Int(0, type_error=True))
    rate: float = checked(0.5, Real(0.0, 1.0))
    lr: float = checked(1e-3, Real(0.0, min_open=True))
    drf: float | None = checked(None, Real(1.0, optional=True, none_means="full dose"))
    mode: str = checked("a", Choice(("a", "b")))
    flag: bool = checked(True, Bool())
    free: tuple = checked((1, 2), Any())
    sampling: int = 5

    TINY = None
    BIG = None

    def _check(self):
        if self.sampling > self.steps:
            raise ValueError(f"sampling={self.sampling} must be <= steps={self.steps}")


_Config.TINY = _Config()
_Config.BIG = _Config(steps=100, net=_Net(width=32))


@pytest.mark.parametrize("changes, error, match", [
    ({"steps": 0}, ValueError, "steps must be an int >= 1, got 0"),
    ({"steps": 2.5}, ValueError, "steps must be an int >= 1"),
    ({"seed": 1.5}, TypeError, "seed must be an int"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0"),
    ({"rate": 1.5}, ValueError, r"rate must be a number in \[0, 1\]"),
    ({"rate": float("nan")}, ValueError, "rate"),
    ({"lr": 0.0}, ValueError, "lr must be a finite number > 0"),
    ({"drf": 0.5}, ValueError, r"drf must be None \(full dose\) or a finite number >= 1"),
    ({"mode": "c"}, ValueError, r"mode must be one of \('a', 'b'\)"),
    ({"flag": 1}, TypeError, "flag must be a bool"),
    ({"net": "wide"}, TypeError, "net must be a _Net"),
    ({"sampling": 20}, ValueError, "sampling=20 must be <= steps=10"),
])
def test_specs_name_the_field(changes, error, match):
    with pytest.raises(error, match=match):
        _Config.TINY.replace(**changes).validate()


def test_valid_values_pass_and_none_is_allowed_when_optional():
    cfg = _Config.TINY.replace(drf=4, rate=1, seed=3).validate()
    assert cfg.drf == 4 and cfg.validate() is cfg


def test_json_roundtrip_presets_and_partial_nested(tmp_path):
    for cfg in (_Config.TINY, _Config.BIG, _Config.TINY.replace(drf=2.0, free=(3, 4))):
        assert _Config.from_json(cfg.to_json()) == cfg
        assert _Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert _Config.TINY.to_dict()["net"]["sizes"] == [1, 2]
    path = _Config.BIG.save_json(tmp_path / "toy.json")
    assert _Config.from_json(path) == _Config.from_json(str(path)) == _Config.BIG
    cfg = _Config.from_dict({"preset": "big", "steps": 7, "net": {"sizes": [4]}})
    assert (cfg.steps, cfg.net.width, cfg.net.sizes) == (7, 32, (4,))
    assert _Config.TINY.replace(net={"width": 8}).net == _Net(width=8)


def test_from_dict_rejects_unknown_keys_and_bad_presets(tmp_path):
    with pytest.raises(ValueError, match=r"unknown Toy configuration keys \['stpes'\]"):
        _Config.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match=r"unknown net keys \['height'\]"):
        _Config.from_dict({"net": {"height": 3}})
    with pytest.raises(TypeError, match="net must be a dict"):
        _Config.from_dict({"net": 3})
    with pytest.raises(ValueError, match="preset must be one of"):
        _Config.from_dict({"preset": "huge"})
    with pytest.raises(TypeError, match="a Toy configuration must be a dict"):
        _Config.from_dict([1])
    with pytest.raises(ValueError, match="steps"):
        _Config.from_dict({"steps": -2})
    with pytest.raises(FileNotFoundError, match="no Toy configuration file"):
        _Config.from_json(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="source must be a path or JSON text"):
        _Config.from_json(3)


def test_checkpoint_networks_roundtrip_and_method_check(tmp_path):
    import torch

    a, b = torch.nn.Linear(2, 3), torch.nn.Conv2d(1, 2, 3)
    path = save_networks(tmp_path / "m.safetensors", "Toy", {"a": a, "b": b, "none": None}, {"extra": [1, 2]})
    states, meta = load_networks(path, "Toy")
    assert sorted(states) == ["a", "b"] and meta["extra"] == [1, 2] and meta["method"] == "Toy"
    assert torch.equal(states["a"]["weight"], a.weight.detach())
    with pytest.raises(ValueError, match="is not a Other checkpoint"):
        load_prior(path, "Other")


def test_tensor_pairs_and_manifest(tmp_path):
    import torch

    pairs = TensorPairs(sino=torch.zeros(3, 1, 4, 4), image=torch.ones(3, 1, 4, 4))
    assert len(pairs) == 3 and sorted(pairs[1]) == ["image", "sino"] and pairs.sino.shape == (3, 1, 4, 4)
    with pytest.raises(ValueError, match="share their first dimension"):
        TensorPairs(a=torch.zeros(2), b=torch.zeros(3))
    with pytest.raises(FileNotFoundError, match="no pettk data set"):
        read_manifest(tmp_path)
