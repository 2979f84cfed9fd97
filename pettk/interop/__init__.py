"""Adapters between pettk and other libraries (optional extras; nothing is imported here).

* :mod:`pettk.interop.deepinv` -- a pettk :class:`~pettk.physics.ForwardModel` as a DeepInverse
  ``LinearPhysics`` (with Poisson noise and background) and a pettk diffusion network as a
  DeepInverse ``Denoiser``. Needs ``pip install 'pettk[deepinv]'``.

The parallelproj projector backend lives with the other backends, in
:mod:`pettk.backends.parallelproj_backend`.
"""
