"""Diffusion machinery shared by the priors (networks, schedules, samplers, trainer).

Split like diffusers: networks (:mod:`.nets`) know nothing about noise schedules, schedules
(:mod:`.schedules`) and samplers (:mod:`.samplers`) know nothing about networks (a model is any
callable ``model(x_t, t) -> eps | x0 | v``), guidance (:mod:`.guidance`) and posterior sampling
with the PET model (:mod:`.posterior`) compose them, and :mod:`.train` trains any module with any
loss; :mod:`.chunks` runs a long multi-stage training in resumable chunks. :mod:`.image_model`
is the generic "train an image diffusion model on a data set" recipe.
"""

from .chunks import TrainingBudget, TrainingIncomplete
from .guidance import CFGModel, classifier_free_guidance, drop_condition
from .posterior import ImageScale, PoissonData, dds_sample, diffpir_sample, dps_sample, penalised_em_step
from .samplers import ddim_sample, ddpm_sample, sdedit
from .schedules import NoiseSchedule
from .train import EMA, TrainConfig, Trainer, diffusion_loss

__all__ = [
    "CFGModel", "classifier_free_guidance", "drop_condition", "ImageScale", "PoissonData", "dds_sample",
    "diffpir_sample", "dps_sample", "penalised_em_step", "ddim_sample", "ddpm_sample", "sdedit", "NoiseSchedule",
    "EMA", "TrainConfig", "Trainer", "diffusion_loss", "TrainingBudget", "TrainingIncomplete",
]
