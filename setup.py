"""Install entry for pettk.

The top-level ``kernels/`` folder (CUDA C sources for CuPy) is shipped inside the package as
``pettk.kernels`` so that a non-editable ``pip install .`` finds its files.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "pettk" / "_version.py").read_text()).group(1)

setup(
    name="pettk",
    version=VERSION,
    description="Differentiable PET physics toolkit with learned (diffusion) priors",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["pettk", "pettk.*"]) + ["pettk.kernels"],
    package_dir={"pettk.kernels": "kernels"},
    package_data={"pettk.kernels": ["*.cu", "*.cuh"], "pettk.models": ["*.safetensors", "*.json", "*.md"]},
    install_requires=[
        # torch: install the build you want first (CPU: pip install torch==2.13.0); any 2.1+ works.
        "torch>=2.1",
        "numpy>=1.24",
        "numba>=0.58",
        "scikit-image>=0.21",
        "nibabel>=5.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "safetensors>=0.4",
    ],
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        "petsird": ["petsird>=0.12"],
        "dask": ["dask[distributed]>=2023.1"],
        "dicom": ["pydicom>=3.0"],
        # deepinv needs a torchvision built for your torch: install that first (see the README)
        "deepinv": ["deepinv>=0.5"],
        # the documentation site: make -C docs html
        "docs": ["sphinx>=7.2", "sphinx-gallery>=0.17", "myst-parser>=2.0"],
        "dev": ["pytest>=7.4", "pytest-benchmark>=4.0", "hypothesis>=6.80", "ruff>=0.4", "petsird>=0.12",
                "dask[distributed]>=2023.1", "pydicom>=3.0", "sphinx>=7.2", "sphinx-gallery>=0.17",
                "myst-parser>=2.0"],
    },
    entry_points={"console_scripts": ["pettk=pettk.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
