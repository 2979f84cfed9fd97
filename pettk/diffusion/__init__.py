"""Diffusion machinery shared by the priors (networks, schedules, samplers, trainer)."""
