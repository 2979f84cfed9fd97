"""The measurement behind DDIP's MR robustness options (``docs/ddip_mr.md``).

Pretrains the tiny MR-conditioned DDIP (``DDIPConfig.TINY``, 500 steps on 16 v1 subjects × 5
slices, as ``tests/test_ddip.py``) twice: the paper's recipe, and with ``mr_dropout=0.2,
mr_mismatch=0.2``. Each reconstructs a held-out FDG slice (subject 1001) and an amyloid-like
slice (subject 1000) from 3·10⁴ counts, starting from MLEM-20, with the right MR and with the MR
of another subject (2024), plain (``mr_guidance=1``), MR-free (``0``) and with ``mr_fallback``;
prints the PSNR against the true activity and the guidance used. Single thread::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/ddip_mr_mismatch.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_ddip import TEST_CONFIG, _scan  # noqa: E402  (the test's data: one definition of the case)

from pettk.metrics import psnr  # noqa: E402
from pettk.priors.ddip import phantom_training_images, train_ddip  # noqa: E402
from pettk.recon import mlem  # noqa: E402


def main() -> None:
    data = phantom_training_images(TEST_CONFIG, n_subjects=16, slices_per_subject=5, slice_range_mm=60.0, seed=0)
    scans = {"amyloid (OOD)": _scan("amyloid", 3e4, seed=1000), "fdg": _scan("fdg", 3e4, seed=1001)}
    wrong_mr = _scan("fdg", 3e4, seed=2024)[1]
    recipes = {"paper": TEST_CONFIG, "dropout+mismatch": TEST_CONFIG.replace(mr_dropout=0.2, mr_mismatch=0.2)}
    print("| pretraining | slice | MR | variant | PSNR (dB) | MLEM-20 (dB) | guidance used |")
    print("|---|---|---|---|---|---|---|")
    for recipe, config in recipes.items():
        start = time.perf_counter()
        prior = train_ddip(config, data)
        print(f"<!-- {recipe}: pretraining {time.perf_counter() - start:.0f} s -->", flush=True)
        variants = {"guidance 1": prior}
        if config.mr_dropout > 0:
            variants.update({"guidance 0": prior.replace(mr_guidance=0.0), "fallback": prior.replace(mr_fallback=True)})
        for name, (act, mr, model, y) in scans.items():
            x20 = mlem(model, y, 20)
            for which, m in (("right", mr), ("other subject's", wrong_mr)):
                for variant, p in variants.items():
                    out = p.reconstruct(model, y, mr=m, init=x20, seed=1)
                    print(f"| {recipe} | {name} | {which} | {variant} | {psnr(out, act):.2f} | {psnr(x20, act):.2f} | "
                          f"{p.last_info['mr_guidance']} |", flush=True)


if __name__ == "__main__":
    main()
