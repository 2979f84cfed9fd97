"""The argument parser of the ``pettk`` command."""

from __future__ import annotations

import argparse

from .._version import __version__
from .compare import _compare
from .evaluate import DEMO_METHODS, EVALUATE_METHODS, _demo, _evaluate
from .recon import ALGORITHMS, _recon
from .simulate import _simulate
from .train import _train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pettk", description="Differentiable PET physics toolkit.")
    parser.add_argument("--version", action="version", version=f"pettk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="every method on held-out simulated brains at DRF 20: figure, NIfTI, table")
    demo.add_argument("--output", default="pettk-demo", help="output folder (default: ./pettk-demo)")
    demo.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    demo.add_argument("--subjects", type=_positive_int, default=3, help="held-out subjects (default 3)")
    demo.add_argument("--slices", type=_positive_int, default=2, help="slices per subject (default 2)")
    demo.add_argument("--projector", action="store_true", help="only the projector demo (Shepp-Logan)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("evaluate", help="compare methods on held-out simulated subjects or a data set's test split")
    ev.add_argument("--output", "-o", required=True, help="output folder")
    ev.add_argument("--methods", nargs="+", choices=EVALUATE_METHODS, default=list(DEMO_METHODS),
                    help=f"methods in table order (default: {' '.join(DEMO_METHODS)})")
    ev.add_argument("--checkpoint", action="append", metavar="METHOD=PATH",
                    help="a checkpoint (.safetensors) or shipped model name for a learned method (repeatable)")
    ev.add_argument("--model-setting", action="append", metavar="METHOD.FIELD=VALUE",
                    help="change a reconstruction setting of an image prior's model (ddip, pet-dds), e.g. "
                         "ddip.final_em_iterations=8 (VALUE is JSON; repeatable)")
    ev.add_argument("--data", metavar="DIR",
                    help="evaluate the test split of this data set (built by `pettk simulate`) instead of "
                         "simulated held-out subjects")
    ev.add_argument("--subjects", type=_positive_int,
                    help="held-out subjects (default 3); with --data: the first N test subjects (default all)")
    ev.add_argument("--slices", type=_positive_int,
                    help="slices per subject (default 2); with --data: N evenly spaced slices of each (default all)")
    ev.add_argument("--drf", type=float, nargs="+",
                    help="dose-reduction factors (default 20; with --data: all of the data set's)")
    ev.add_argument("--tracer", choices=("fdg", "amyloid"),
                    help="simulated subjects' tracer (default fdg; amyloid: out of distribution for the FDG-trained "
                         "models)")
    ev.add_argument("--seed", type=int, help="offset of the simulated held-out subject seeds (default 0)")
    ev.add_argument("--anatomy", choices=("v1", "v2", "v2-shifted"),
                    help="simulated subjects' anatomy (default v1, the shipped models' training family; v2 and "
                         "v2-shifted are out of family for them, v2-shifted also for models trained on v2)")
    ev.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                    help="tune OSEM (iterations x post-filter) and BSREM-RDP (beta x gamma), and the same freedom "
                         "after RED/DREAM's restoration and LegoPET's sample and a post-filter of DDIP's and PET-DDS's "
                         "image, by mean PSNR on the validation split of the evaluated data (default: on when there "
                         "is one; --no-tune: the fixed TUNED constants, the priors' images as they are)")
    ev.add_argument("--tune-slices", type=_positive_int,
                    help="validation slices that tune, evenly spread (default 8)")
    ev.add_argument("--tune-osem-iterations", type=_positive_int, nargs="+", metavar="N",
                    help="OSEM iterations to try (default 2 4 8)")
    ev.add_argument("--tune-filter-mm", type=float, nargs="+", metavar="MM",
                    help="post-filter FWHMs to try (default 0 4 6 8 10)")
    ev.add_argument("--tune-beta", type=float, nargs="+", metavar="B",
                    help="BSREM-RDP betas to try (default 0.03 0.1 0.3 1 3)")
    ev.add_argument("--tune-gamma", type=float, nargs="+", metavar="G",
                    help="RDP gammas to try (default 0.5 2 5 20)")
    ev.add_argument("--tune-extend", type=int, metavar="K",
                    help="extend the beta/gamma grids past a winning end up to K times (default 3; 0: as given)")
    ev.add_argument("--settings", nargs="+", metavar="TUNING_JSON",
                    help="no tuning: the settings an earlier run chose (its tuning.json, or its folder), per DRF; "
                         "several files combine, each giving the methods it tuned (later over earlier)")
    ev.add_argument("--no-tune-restorer-map", dest="tune_restorer_map", action="store_false",
                    help="tune RED's / DREAM's OSEM + filter of the restored sinogram only (default: its BSREM-RDP "
                         "competes on the beta/gamma grids)")
    ev.add_argument("--bsrem-max-epochs", type=_positive_int, metavar="N",
                    help="cap BSREM-RDP's epochs (default 1000; it stops earlier when converged)")
    ev.add_argument("--3d", dest="three_d", action="store_true",
                    help="fully 3D: v2 heads on a ring section of the mmr-like scanner, 3D OSEM/BSREM tuned on "
                         "validation volumes, metrics over the brain with the axial gradient error")
    ev.add_argument("--rings", type=_positive_int, default=16, help="--3d: rings of the section (default 16)")
    ev.add_argument("--volume-shape", type=_positive_int, nargs=3, default=[128, 128, 32], metavar=("NX", "NY", "NZ"),
                    help="--3d: voxels of the volume (default 128 128 32)")
    ev.add_argument("--validation-subjects", type=_positive_int, default=2,
                    help="--3d: volumes that tune the classical settings (default 2)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_evaluate)

    cmp = sub.add_parser("compare", help="paired margins of `pettk evaluate` runs on the same data against a baseline")
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="`pettk evaluate` output folders (slices.csv, lesions.csv)")
    cmp.add_argument("--baseline", default="bsrem-rdp",
                     help="the method every other method is paired with, slice by slice (default bsrem-rdp)")
    cmp.add_argument("--output", "-o", metavar="FILE.md", help="also write the Markdown table to FILE.md")
    cmp.set_defaults(func=_compare)

    simp = sub.add_parser("simulate", help="build a paired low-/full-dose 2D-slice data set of simulated brains")
    simp.add_argument("output", help="data set folder (resumed if it exists with the same settings)")
    simp.add_argument("--subjects", type=_positive_int, default=None,
                      help="subjects (default 240: the shipped models' training set; with --tissue-maps: every "
                           "subject folder)")
    simp.add_argument("--slices", type=_positive_int, default=20, help="axial slices per subject (default 20)")
    simp.add_argument("--size", type=_positive_int, default=128, help="image size in pixels (default 128: 2.09 mm)")
    simp.add_argument("--geometry", choices=("mmr-like", "parallel"), default="mmr-like")
    simp.add_argument("--anatomy", choices=("v2", "v2-shifted", "v1"), default=None,
                      help="anatomy generator: v2 (default), v2-shifted (out-of-family test family) or v1")
    simp.add_argument("--tissue-maps", metavar="DIR", default=None,
                      help="the users' own anatomy: one sub-folder of NIfTI tissue maps per subject "
                           "(docs/tissue_maps.md); subjects are the sub-folders in name order")
    simp.add_argument("--drf", type=float, nargs="+", default=[4.0, 20.0, 100.0], help="dose-reduction factors")
    simp.add_argument("--counts", type=float, default=5e5, help="full-dose counts per slice (default 5e5)")
    simp.add_argument("--tracer", choices=("fdg", "amyloid", "amyloid-positive", "amyloid-negative"), default="fdg",
                      help="amyloid: positive or negative per subject")
    simp.add_argument("--lesions", type=int, default=2, help="lesions per slice (default 2)")
    simp.add_argument("--slice-range-mm", type=float,
                      help="axial span of the slices around the brain centre (default 110 mm; v1: 80)")
    simp.add_argument("--validation", type=int, default=20, help="validation subjects (default 20)")
    simp.add_argument("--test", type=int, default=20, help="test subjects (default 20)")
    simp.add_argument("--seed", type=int, default=0)
    simp.add_argument("--no-progress", action="store_true")
    simp.set_defaults(func=_simulate)

    tr = sub.add_parser("train", help="train a learned model (an image diffusion model or a prior)")
    tr.add_argument("kind", choices=("diffusion", "red", "dream", "ddip", "legopet"), help="what to train")
    tr.add_argument("--output", "-o", required=True, help="output folder (checkpoints, model.safetensors)")
    tr.add_argument("--preset", choices=("tiny", "gpu", "full"), default="tiny",
                    help="base configuration (default tiny; gpu for red only)")
    tr.add_argument("--drf", type=float, help="red: the dose-reduction factor of the model (default 20)")
    tr.add_argument("--config", help="JSON (or YAML) file overriding the preset")
    tr.add_argument("--data", help="data set folder built by `pettk simulate`")
    tr.add_argument("--steps", type=_positive_int, help="override the number of steps")
    tr.add_argument("--resume", action="store_true", help="continue from the output folder's checkpoint")
    tr.add_argument("--init-from", metavar="MODEL",
                    help="diffusion, ddip: start from a trained model's weights (a model file of the same kind, a "
                         "PET-DDS model for diffusion, or a shipped model's name) instead of random ones: "
                         "continue an earlier run's training in a new run")
    tr.add_argument("--max-minutes", type=float, metavar="M",
                    help="stop after M minutes, checkpoints written (a chunk of a long run; exit status 75 when "
                         "training is not finished: continue with --resume)")
    tr.add_argument("--device", default="auto",
                    help="torch device to train on (default auto: cuda when torch sees a GPU, else cpu)")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)

    rec = sub.add_parser("recon", help="reconstruct a pettk sinogram (.npz) or a PETSIRD list-mode file into NIfTI")
    rec.add_argument("sinogram", nargs="?", help="sinogram file written by pettk.io.save_sinogram")
    rec.add_argument("--petsird", metavar="FILE", help="PETSIRD list-mode file (binary or NDJSON): list-mode OSEM")
    rec.add_argument("--chunk-events", type=_positive_int, default=262144,
                     help="petsird: events per chunk (bounds memory; default 262144)")
    rec.add_argument("--voxel-size", type=float, help="petsird: voxel size in mm (default from the scanner)")
    rec.add_argument("--energy-window", type=float, nargs=2, metavar=("LO", "HI"), help="petsird: keV window")
    rec.add_argument("--no-tof", action="store_true", help="petsird: ignore the TOF bins")
    rec.add_argument("--cache-dir", help="petsird: folder for the temporary event cache (default: system temp)")
    rec.add_argument("--estimate-corrections", action="store_true",
                     help="petsird: randoms from the delayeds, attenuation from --mu, scatter (SSS + tail fit), "
                          "then sinogram OSEM; prints the report and writes OUTPUT.corrections.json")
    rec.add_argument("--scatter-rounds", type=_positive_int, default=3,
                     help="petsird --estimate-corrections: scatter <-> reconstruction rounds (default 3)")
    rec.add_argument("--scatter-step", type=float, default=15.0, metavar="MM",
                     help="petsird --estimate-corrections: edge of the mu-map blocks that become one scatter "
                          "point (default 15 mm; smaller for small objects)")
    from ..batch import add_cohort_arguments  # standard library only at import time

    add_cohort_arguments(rec)
    rec.add_argument("--output", "-o", required=True,
                     help="output image (.nii or .nii.gz); with --cohort: the output folder")
    rec.add_argument("--algorithm", "-a", choices=ALGORITHMS, default="osem", help="default: osem")
    rec.add_argument("--iterations", "-n", type=_positive_int, default=4, help="iterations/epochs (default 4)")
    rec.add_argument("--subsets", "-s", type=_positive_int, default=8, help="view subsets (default 8; mlem: 1)")
    rec.add_argument("--psf-mm", type=float, default=0.0, help="resolution model FWHM in mm (default none)")
    rec.add_argument("--post-filter-mm", type=float, default=0.0,
                     help="Gaussian post-filter FWHM in mm (default 0: none; the learned models' cards give the "
                          "value tuned on validation slices, e.g. pet-dds-mr 4 mm at DRF 20, 10 mm at DRF 100)")
    rec.add_argument("--prior", choices=("rdp", "quadratic", "tv"), default="rdp", help="MAP prior (default rdp)")
    rec.add_argument("--beta", type=float, default=1.0, help="prior strength (default 1)")
    rec.add_argument("--gamma", type=float, default=2.0, help="RDP edge parameter (default 2)")
    rec.add_argument("--epsilon", type=float, default=1e-3, help="RDP epsilon / TV delta (image units)")
    rec.add_argument("--mu", help="mu-map NIfTI (1/mm) when the file has no attenuation factors")
    rec.add_argument("--method", choices=("red", "dream", "ddip", "legopet", "pet-dds"),
                     help="a learned method instead of --algorithm (2D or 3D sinograms; red/dream: then OSEM "
                          "with --iterations/--subsets, or with --algorithm bsrem BSREM with --prior/--beta on "
                          "the raw counts' scale)")
    rec.add_argument("--model", help="--method's model: a shipped name (pettk.models) or a .safetensors checkpoint "
                                     "(default: the method's shipped model)")
    rec.add_argument("--drf", type=float, help="red/dream: the data's dose-reduction factor (default the model's); "
                     "ddip/pet-dds: run the model with its settings tuned for this DRF (its card)")
    rec.add_argument("--model-setting", action="append", metavar="FIELD=VALUE",
                     help="ddip/pet-dds: change a reconstruction setting of the model, e.g. final_em_iterations=8 "
                          "(VALUE is JSON; repeatable; over the --drf settings)")
    rec.add_argument("--refine-iterations", type=_nonnegative_int, default=0, metavar="N",
                     help="legopet: N MLEM iterations of the data started from the sample, before --post-filter-mm "
                          "(default 0: the sample; the model card gives the pair tuned on validation slices)")
    rec.add_argument("--mr", help="ddip/pet-dds: co-registered MR NIfTI on the sinogram's grid")
    rec.add_argument("--window", choices=("ramp", "shepp-logan", "cosine", "hamming", "hann"), default="hann",
                     help="FBP window (default hann)")
    rec.add_argument("--dicom", metavar="DIR", help="also write a DICOM PET series (one file per slice) into the new "
                     "or empty folder DIR (needs pydicom: pip install \"pettk[dicom]\")")
    rec.add_argument("--dicom-units", default="BQML",
                     help="DICOM Units of the image values (default BQML; e.g. CNTS, PROPCNTS)")
    rec.add_argument("--no-progress", action="store_true", help="no progress bar")
    rec.set_defaults(func=_recon)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
