"""Training data of a PET-DDS image model: MR condition dropout for classifier-free guidance."""

from __future__ import annotations

import numbers

import torch

from ..._validation import as_nonnegative_int

__all__ = ["ConditionDropout"]


# --------------------------------------------------------------------------------------------
# Training helper: condition dropout for classifier-free MR guidance
# --------------------------------------------------------------------------------------------
class ConditionDropout(torch.utils.data.Dataset):
    """Wraps a dataset of ``{"x", "cond"}`` items: each item's ``cond`` becomes zeros with probability ``p``.

    Train an MR-conditioned image model with it (``train_image_diffusion(config, out,
    dataset=ConditionDropout(FieldDataset(slices, "truth", "mr"), 0.1))``) so that the same
    network also predicts unconditionally (the null condition is zeros, as in
    :class:`~pettk.diffusion.guidance.CFGModel`) and PET-DDS can use ``guidance != 1``. The draws
    come from one generator seeded with ``seed``, in the order the items are read.
    """

    def __init__(self, dataset, p: float = 0.1, seed: int = 0):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p (drop probability) must be a number in [0, 1], got {p!r}")
        self.dataset = dataset
        self.p = float(p)
        self.generator = torch.Generator().manual_seed(as_nonnegative_int("seed", seed))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        item = dict(self.dataset[idx])
        if "cond" not in item:
            raise KeyError("ConditionDropout needs items with a 'cond' entry (a conditional dataset)")
        if float(torch.rand((), generator=self.generator)) < self.p:
            item["cond"] = torch.zeros_like(item["cond"])
        return item
