"""``pettk train``: image diffusion models and the priors, in resumable chunks."""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path


def _read_config_file(path) -> dict:
    """The JSON (or YAML) object in ``path``; one clean ``pettk train: ...`` line for a bad file."""
    import json

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SystemExit(f"pettk train: cannot read --config {path}: {err.strerror or err}") from None
    if str(path).endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise SystemExit("pettk train: YAML configurations need PyYAML (pip install pyyaml); "
                             "or write the configuration as JSON") from None
        try:
            value = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise SystemExit(f"pettk train: --config {path} is not valid YAML: {err}") from None
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"pettk train: --config {path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"pettk train: --config {path} must hold a JSON object of settings, got a "
                         f"{type(value).__name__}")
    return value


def _train_device(args: argparse.Namespace):
    """The torch device of ``pettk train``: ``--device``, or CUDA when torch sees a GPU, else the CPU."""
    import torch

    if args.device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise SystemExit(f"pettk train: --device must be a torch device such as cpu, cuda or cuda:1, "
                         f"got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"pettk train: --device {args.device} asked for, but torch sees no CUDA device")
    return device


def _train_red(args: argparse.Namespace) -> int:
    import dataclasses

    from ..priors.red import REDConfig, train_red

    base = {"tiny": REDConfig.TINY, "gpu": REDConfig.GPU, "full": REDConfig.FULL}[args.preset]
    override = _read_config_file(args.config) if args.config else {}
    unknown = set(override) - set(base.to_dict())
    if unknown:
        raise SystemExit(f"pettk train red: unknown configuration keys {sorted(unknown)}")
    changes = {k: v for k, v in override.items() if k != "net"}
    if "net" in override:
        net_override = override["net"]
        if not isinstance(net_override, dict):
            raise SystemExit("pettk train red: 'net' in --config must be an object of network settings")
        net_fields = {f.name for f in dataclasses.fields(base.net)}
        unknown_net = set(net_override) - net_fields
        if unknown_net:
            raise SystemExit(f"pettk train red: unknown network keys {sorted(unknown_net)}")
        net_changes = {k: tuple(v) if isinstance(v, list) else v for k, v in net_override.items()}
        try:
            changes["net"] = base.net.replace(**net_changes)
        except (TypeError, ValueError) as err:
            raise SystemExit(f"pettk train red: {err}") from None
    if args.steps:
        changes["ren_steps"] = args.steps
        changes["dcn_steps"] = max(1, args.steps // 2)
    if args.drf:
        changes["drf"] = args.drf
    try:
        config = base.replace(**changes).validate()
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk train red: {err}") from None
    if not args.data:
        raise SystemExit("pettk train red: --data must name a data set folder (built by `pettk simulate`)")
    device = _train_device(args)
    start = time.perf_counter()
    with _chunk_of_training(args) as chunk:
        train_red(config, args.data, out_dir=args.output, progress=not args.no_progress, device=device,
                  resume=args.resume, time_limit_s=chunk.time_limit_s)
        print(f"pettk train red: DRF {config.drf:g}, {config.ren_steps} REN + {config.dcn_steps} DCN steps on {device} "
              f"in {time.perf_counter() - start:.1f} s -> {Path(args.output) / 'red.safetensors'}")
    return chunk.status


#: ``pettk train KIND``: module, configuration class, training function, checkpoint name.
PRIOR_TRAINERS = {"dream": ("pettk.priors.dream", "DREAMConfig", "train_dream", "dream.safetensors"),
                  "ddip": ("pettk.priors.ddip", "DDIPConfig", "train_ddip", "ddip.safetensors"),
                  "legopet": ("pettk.priors.legopet", "LegoPETConfig", "train_legopet", "legopet.safetensors")}


def _train_prior(args: argparse.Namespace) -> int:
    import importlib

    module_name, config_name, train_name, file_name = PRIOR_TRAINERS[args.kind]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, config_name)
    if args.steps or args.drf:
        raise SystemExit(f"pettk train {args.kind}: set steps and DRF in --config (a JSON file); --steps and --drf "
                         "are for diffusion/red")
    try:
        config = config_cls.from_json(args.config) if args.config else getattr(config_cls, args.preset.upper())
        config = config.validate()
    except (TypeError, ValueError, KeyError) as err:
        raise SystemExit(f"pettk train {args.kind}: {err}") from None
    if not args.data:
        raise SystemExit(f"pettk train {args.kind}: --data must name a data set folder (built by `pettk simulate`)")
    init_from = _initial_model(args.init_from)
    device = _train_device(args)
    start = time.perf_counter()
    with _chunk_of_training(args) as chunk:
        extra = {} if init_from is None else {"init_from": init_from}
        with _init_from_errors(args.kind, init_from):
            model = getattr(module, train_name)(config, args.data, out_dir=args.output,
                                                progress=not args.no_progress, device=device, resume=args.resume,
                                                time_limit_s=chunk.time_limit_s, **extra)
        path = model.save(Path(args.output) / file_name)
        print(f"pettk train {args.kind}: on {device} in {time.perf_counter() - start:.1f} s -> {path}")
    return chunk.status


#: ``pettk train`` kinds that can start from a trained model's weights (``--init-from``).
INIT_FROM_KINDS = ("diffusion", "ddip")

#: Exit status of ``pettk train`` when a ``--max-minutes`` chunk ended before training finished
#: (sysexits' EX_TEMPFAIL: run the same command with ``--resume`` to continue).
EXIT_CHUNK_ENDED = 75


class _chunk_of_training:
    """``with _chunk_of_training(args) as chunk:`` around one ``pettk train`` run: SIGTERM (a session or
    job scheduler ending the run) becomes KeyboardInterrupt, so the trainer writes its checkpoint
    before exiting; ``chunk.time_limit_s`` is ``--max-minutes`` in seconds; a
    :class:`~pettk.diffusion.TrainingIncomplete` is reported in one line and ``chunk.status`` becomes
    :data:`EXIT_CHUNK_ENDED`."""

    def __init__(self, args: argparse.Namespace):
        self.kind = args.kind
        self.time_limit_s = None if args.max_minutes is None else 60.0 * args.max_minutes
        self.status = 0

    def __enter__(self):
        import signal

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous = signal.signal(signal.SIGTERM, interrupt)
        return self

    def __exit__(self, kind, error, traceback):
        import signal

        from ..diffusion import TrainingIncomplete

        signal.signal(signal.SIGTERM, self._previous)
        if isinstance(error, TrainingIncomplete):
            print(f"pettk train {self.kind}: chunk ended in stage {error.stage} at step {error.step} of {error.steps}; "
                  f"checkpoint {error.checkpoint}: run the same command with --resume to continue")
            self.status = EXIT_CHUNK_ENDED
            return True
        if isinstance(error, KeyboardInterrupt):   # Ctrl-C or SIGTERM: the trainer wrote its checkpoint
            print(f"pettk train {self.kind}: interrupted ({error or 'Ctrl-C'}); the steps done so far are in the "
                  f"output folder's checkpoint: run the same command with --resume to continue")
            self.status = EXIT_CHUNK_ENDED
            return True
        return False


def _initial_model(name_or_path):
    """``--init-from``: a shipped model's name or a weights file; None when not given."""
    if name_or_path is None:
        return None
    from .. import models

    if name_or_path in models.REGISTRY:
        return models.path_of(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise SystemExit(f"pettk train: --init-from {name_or_path} is neither a shipped model "
                         f"({', '.join(sorted(models.REGISTRY))}) nor a file")
    return path


@contextlib.contextmanager
def _init_from_errors(kind: str, init_from):
    """A ``ValueError`` of a run started ``--init-from`` a model (another network, another kind of
    file) becomes one ``pettk train KIND: --init-from: ...`` line; without it, errors pass unchanged."""
    try:
        yield
    except ValueError as err:
        if init_from is None:
            raise
        raise SystemExit(f"pettk train {kind}: --init-from: {err}") from None


def _train(args: argparse.Namespace) -> int:

    from ..diffusion import image_model

    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        raise SystemExit(f"pettk train: --max-minutes takes a positive number of minutes, got {args.max_minutes}")
    if args.init_from is not None and args.kind not in INIT_FROM_KINDS:
        raise SystemExit(f"pettk train {args.kind}: --init-from is for {', '.join(INIT_FROM_KINDS)}")
    if args.kind == "red":
        return _train_red(args)
    if args.kind in PRIOR_TRAINERS:
        return _train_prior(args)
    if args.preset == "gpu":
        raise SystemExit("pettk train diffusion: presets are 'tiny' and 'full'")

    base = image_model.TINY if args.preset == "tiny" else image_model.FULL
    override = _read_config_file(args.config) if args.config else {}
    try:
        config = image_model.merge_config(base, override)
    except ValueError as err:
        raise SystemExit(f"pettk train: {err}") from None
    if args.data:
        config["data"]["root"] = args.data
    if args.steps:
        config["train"]["steps"] = args.steps
    init_from = _initial_model(args.init_from)
    device = _train_device(args)
    start = time.perf_counter()
    with _chunk_of_training(args) as chunk:
        with _init_from_errors(args.kind, init_from):
            _, _, trainer = image_model.train_image_diffusion(config, args.output, progress=not args.no_progress,
                                                              resume=args.resume, device=device,
                                                              time_limit_s=chunk.time_limit_s, init_from=init_from)
    steps = config["train"]["steps"]
    print(f"pettk train {args.kind}: step {trainer.step} of {steps} on {device} in "
          f"{time.perf_counter() - start:.1f} s -> {Path(args.output) / 'model.safetensors'}"
          + ("" if trainer.step >= steps else " (chunk ended: run the same command with --resume to continue)"))
    return chunk.status if trainer.step >= steps else EXIT_CHUNK_ENDED
