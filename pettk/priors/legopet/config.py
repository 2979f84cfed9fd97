"""LegoPET's configuration (:class:`LegoPETConfig`) and its presets, declared with
:mod:`pettk.priors._config`."""

from __future__ import annotations

from dataclasses import dataclass

from ...diffusion.nets import LEGOPET_FULL, LEGOPET_GPU, LEGOPET_TINY, LegoPETNetsConfig
from ...diffusion.schedules import NoiseSchedule
from ...diffusion.train import TrainConfig
from .._config import Bool, Choice, Int, Nested, PriorConfig, Real, checked, is_int

__all__ = ["LegoPETConfig", "SAMPLERS", "TARGETS", "CDPM_INITS", "BETA_SCHEDULES", "SINOGRAM_INPUTS"]

SAMPLERS = ("ddim", "ddpm")
TARGETS = ("reference", "truth")
CDPM_INITS = ("random", "pnpnet")
BETA_SCHEDULES = ("linear", "cosine")
SINOGRAM_INPUTS = ("prompts", "precorrected")

_TINY_NET = LEGOPET_TINY.replace(channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=())


@dataclass(frozen=True)
class LegoPETConfig(PriorConfig):
    """LegoPET's networks, diffusion, sampling, data and optimisation (METHODS §5.6).

    JSON-serialisable (:meth:`to_dict`, :meth:`to_json`, :meth:`from_dict`, :meth:`from_json`).
    Presets: :attr:`TINY` (CPU tests), :attr:`GPU` (practical), :attr:`FULL` (the paper).

    Attributes
    ----------
    net : LegoPETNetsConfig
        The shared backbone; ``net.image_size`` is the canvas (H, W) both networks work on.
    features : bool
        ``True``: LegoPET (PnPNet features injected). ``False``: the plain sinogram-conditioned
        cDPM (the ablation; no PnPNet is trained).
    T : int
        Diffusion steps.
    beta_schedule : {"linear", "cosine"}
        ``"linear"``: Ho et al.'s betas 1e-4 → 0.02 at ``T = 1000``, both ends multiplied by
        ``1000 / T`` for other ``T`` (so ``abar_T`` stays ≈ 0, the usual rescaling of short
        chains). ``"cosine"``: Nichol & Dhariwal.
    prediction : {"eps", "x0"}
        What the cDPM predicts (the paper: ``"eps"``).
    p_dp : float in [0, 1]
        Probability of dropping the whole condition in training (classifier-free guidance).
    guidance_scale : float >= 0
        λ of ``(1 + λ) eps_c - λ eps_∅`` (0: the conditional model alone).
    sampler : {"ddim", "ddpm"}
        DDIM on a strided grid of ``sampling_steps`` times (with ``eta``), or DDPM ancestral
        sampling over all ``T`` steps.
    sampling_steps : int
        DDIM steps (ignored by DDPM).
    eta : float in [0, 1]
        DDIM's stochasticity (0: deterministic).
    clip_denoised : bool
        Clamp ``x0_hat`` to [-1, 1] at every step.
    dc_iterations : int
        EM iterations of the optional data-consistency step per sampling step (0: off, the paper).
    dc_weight : float >= 0
        Anchor weight of those EM iterations, relative: ``beta = dc_weight · mean(sens) /
        mean(x0_hat activity)`` in :func:`~pettk.diffusion.posterior.penalised_em_step`
        (0: plain EM started at ``x0_hat``).
    n_samples : int >= 1
        Samples averaged per reconstruction (1: one posterior sample, the paper). More give a
        Monte Carlo estimate of the posterior mean (pettk extension): lower error, less texture,
        ``n_samples`` times the cost.
    target : {"reference", "truth"}
        Training image: the data set's high-count OSEM reference (the paper) or the phantom.
    cdpm_init : {"random", "pnpnet"}
        Initialisation of the cDPM: random (the paper), or a warm start of the shared backbone
        from the trained PnPNet (pettk extension, :func:`warm_start_cdpm`), which lets a CPU-sized
        cDPM train in fewer steps.
    drf : float or None
        Input sinogram: the full-dose prompts (``None``) or the low-dose prompts at this DRF.
    sinogram_input : {"prompts", "precorrected"}
        What the networks see. ``"prompts"`` (the paper): the prompts divided by their own
        maximum, so the count level, and with it the image's scale, is hidden and the output's
        scale is learned from the training images. ``"precorrected"`` (pettk extension): ``(y -
        additive) / mult`` from the measurement's forward model
        (:func:`~pettk.priors.legopet.precorrect_sinogram`), divided by one data-set constant
        (``LegoPET.sinogram_scale``): its mean is the activity's line integral whatever the
        counts, attenuation or acquisition time, so the image scale is in the input. (In pettk's
        data sets every slice has the same expected prompts, so the activity-to-counts factor in
        ``mult`` varies about 5× between slices; a prompts-only PnPNet had to guess it from the
        anatomy and was 1.5–15× off on unseen anatomy, ``legopet-drf20-128``'s card.)
    pnpnet_steps, pnpnet_lr : PnPNet optimiser steps and learning rate.
    dwt_weight : float >= 0
        Weight of the wavelet term in the PnPNet loss (the paper: 0.1).
    cdpm_steps, cdpm_lr : cDPM optimiser steps and learning rate.
    batch_size, weight_decay, ema_decay, grad_clip, lr_schedule, warmup_steps :
        Passed to :class:`~pettk.diffusion.train.TrainConfig` (AdamW; weight decay 0 is Adam).
    checkpoint_every : int
        Optimiser steps between periodic trainer checkpoints of a stage (0: only at the end of a
        stage or chunk), so that a process killed without warning (SIGKILL) loses at most this many
        steps; ``resume=True`` continues from the last one. No effect on the training result.
    seed : int
        Initialisation, batches and noise in training (PnPNet ``seed``, cDPM ``seed + 1``) and the
        default sampling seed.
    """

    _name = "LegoPET"
    _presets = {"tiny": "TINY", "gpu": "GPU", "full": "FULL"}
    _default_preset = "TINY"

    net: LegoPETNetsConfig = checked(_TINY_NET, Nested(LegoPETNetsConfig))
    features: bool = checked(True, Bool())
    T: int = checked(100, Int(1))
    beta_schedule: str = checked("linear", Choice(BETA_SCHEDULES))
    prediction: str = checked("x0", Choice(("eps", "x0")))
    p_dp: float = checked(0.1, Real(0.0, 1.0))
    guidance_scale: float = checked(0.5, Real(0.0))
    sampler: str = checked("ddim", Choice(SAMPLERS))
    sampling_steps: int = checked(20, Int(1))
    eta: float = checked(0.0, Real(0.0, 1.0))
    clip_denoised: bool = checked(True, Bool())
    dc_iterations: int = checked(0, Int(0))
    dc_weight: float = checked(0.0, Real(0.0))
    n_samples: int = checked(1, Int(1))
    target: str = checked("truth", Choice(TARGETS))
    cdpm_init: str = checked("random", Choice(CDPM_INITS))
    drf: float | None = checked(None, Real(1.0, optional=True, none_means="full dose"))
    sinogram_input: str = checked("prompts", Choice(SINOGRAM_INPUTS))
    pnpnet_steps: int = checked(400, Int(0))
    pnpnet_lr: float = checked(2e-3, Real(0.0, min_open=True))
    dwt_weight: float = checked(0.1, Real(0.0))
    cdpm_steps: int = checked(1500, Int(1))
    cdpm_lr: float = checked(2e-3, Real(0.0, min_open=True))
    batch_size: int = checked(8, Int(1))
    weight_decay: float = checked(0.0, Real(0.0))
    ema_decay: float = checked(0.0, Real(0.0, 1.0, max_open=True))
    grad_clip: float | None = 1.0  # checked by TrainConfig (_check)
    lr_schedule: str = "cosine"  # idem
    warmup_steps: int = 20  # idem
    checkpoint_every: int = checked(200, Int(0))
    seed: int = checked(0, Int())

    TINY = None  # set below (a dataclass field cannot default to an instance of its own class)
    GPU = None
    FULL = None

    def _check(self) -> None:
        """The canvas and channels of ``net``, the PnPNet stage, the DDIM grid and the trainer's fields."""
        size = tuple(self.net.image_size)
        factor = 2 ** (len(self.net.channel_mults) - 1)
        if len(size) != 2 or any(not is_int(s) or s < 1 or s % factor for s in size):
            raise ValueError(f"net.image_size must be two positive ints divisible by {factor} "
                             f"(2**(levels - 1)), got {self.net.image_size!r}")
        if self.net.image_channels != 1 or self.net.sino_channels != 1:
            raise ValueError("LegoPET works on single-channel 2D slices: net.image_channels and net.sino_channels "
                             f"must be 1, got {self.net.image_channels} and {self.net.sino_channels}")
        if self.features and self.pnpnet_steps < 1:
            raise ValueError("pnpnet_steps must be >= 1 when features=True (the PnPNet must be trained)")
        if self.sampling_steps > self.T:
            raise ValueError(f"sampling_steps={self.sampling_steps} must be <= T={self.T}")
        self.train_config("pnpnet").validate()

    # -- derived objects -------------------------------------------------------------------------
    @property
    def canvas(self) -> tuple[int, int]:
        """The networks' input size (H, W)."""
        return tuple(int(s) for s in self.net.image_size)

    def schedule(self) -> NoiseSchedule:
        """The :class:`NoiseSchedule` of ``T`` and ``beta_schedule``."""
        if self.beta_schedule == "cosine":
            return NoiseSchedule.cosine(self.T)
        factor = 1000.0 / self.T
        return NoiseSchedule.linear(self.T, min(1e-4 * factor, 0.5), min(0.02 * factor, 0.999))

    def train_config(self, stage: str) -> TrainConfig:
        """The :class:`TrainConfig` of stage ``"pnpnet"`` or ``"cdpm"``."""
        if stage not in ("pnpnet", "cdpm"):
            raise ValueError(f"stage must be 'pnpnet' or 'cdpm', got {stage!r}")
        steps, lr = (self.pnpnet_steps, self.pnpnet_lr) if stage == "pnpnet" else (self.cdpm_steps, self.cdpm_lr)
        return TrainConfig(steps=max(int(steps), 1), batch_size=self.batch_size, lr=float(lr),
                           weight_decay=float(self.weight_decay), lr_schedule=self.lr_schedule,
                           warmup_steps=self.warmup_steps, ema_decay=float(self.ema_decay), grad_clip=self.grad_clip,
                           seed=self.seed + (0 if stage == "pnpnet" else 1), log_every=10,
                           checkpoint_every=self.checkpoint_every)


#: CPU tests (§5.6 tiny): 32² canvas, 16 channels, T = 100, DDIM 20 steps, 400 PnPNet + 1500 cDPM
#: steps. Two deliberate departures from §5.6, both measured on held-out slices (see the issue-10
#: note): (1) three levels (32², 16², 8²; one ResBlock each, attention only in the middle block)
#: instead of two: the sinogram → image map is non-local, and with the middle attention at 8² the
#: PnPNet gains 1.5 dB at half the cost of LEGOPET_TINY; (2) the cDPM predicts x0: after a few
#: hundred CPU steps an ε-predicting cDPM still has ε errors of ~5e-3 at t = T-1, which
#: ``1/sqrt(abar)`` ≈ 220 amplifies into a useless x0 estimate (held-out samples at ≈ 9 dB), while
#: the x0 parameterisation samples at the PnPNet's accuracy. The GPU and full presets keep ε.
LegoPETConfig.TINY = LegoPETConfig()
#: GPU-practical: 128² canvas (4 levels, 64–128 channels, 8.95 M), T = 1000, 5k + 20k iterations, DDIM 50.
LegoPETConfig.GPU = LegoPETConfig(net=LEGOPET_GPU, T=1000, prediction="eps", sampling_steps=50, target="reference",
                                  pnpnet_steps=5000, pnpnet_lr=1e-4, cdpm_steps=20_000, cdpm_lr=1e-4, batch_size=16,
                                  ema_decay=0.999, lr_schedule="constant", warmup_steps=500,
                                  checkpoint_every=1000)
#: The paper: 256² canvas, 35.7 M per network, T = 1000 with DDPM sampling, Adam 3e-5 for the PnPNet
#: over 119 epochs and batch 4 over 500 epochs for the cDPM (4675 training slices: 1169 steps per
#: epoch). The cDPM's learning rate and EMA are not given: DDPM's 256² settings (2e-5, 0.9999).
LegoPETConfig.FULL = LegoPETConfig(net=LEGOPET_FULL, T=1000, prediction="eps", sampler="ddpm", sampling_steps=1000,
                                   target="reference", pnpnet_steps=119 * 1169, pnpnet_lr=3e-5,
                                   cdpm_steps=500 * 1169, cdpm_lr=2e-5, batch_size=4, ema_decay=0.9999,
                                   lr_schedule="constant", warmup_steps=0, checkpoint_every=5000)
