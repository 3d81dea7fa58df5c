"""fastprogan: fast Progressive Growing of GANs (ProGAN) for PyTorch.

`kernels/` (Triton device code) sits at the repository's top level and installs as
`fastprogan.kernels` through package_dir, so a plain non-editable `pip install .` imports it.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "fastprogan" / "__init__.py").read_text()).group(1)

packages = [*find_packages(include=["fastprogan", "fastprogan.*"]), "fastprogan.kernels"]

setup(
    name="fastprogan",
    version=VERSION,
    description="Fused Triton kernels and a fast, faithful PyTorch ProGAN (Karras et al. 2018)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"fastprogan.kernels": "kernels"},
    include_package_data=True,
    package_data={
        "fastprogan": [
            "data/default/*.npz",
            "data/default/*.json",
            "data/default/*.md",
            "ops/dispatch_tables/*.json",
            "ops/dispatch_tables/*.md",
        ]
    },
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "tqdm>=4.60",
        "pillow>=9.0",
        "safetensors>=0.4",
        # Per-image dataset checksums verified by the loader (xxh3_64: ~3x CRC32's speed; README).
        "xxhash>=3.0",
        # Triton only ships wheels for Linux x86_64; elsewhere the reference path runs.
        "triton>=3.0; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-benchmark>=4",
            "ruff>=0.5",
            "matplotlib>=3.6",
            # external oracles of the metrics tests (SSIM, MS-SSIM, Laplacian pyramid, Frechet distance)
            "scikit-image>=0.21",
            "scipy>=1.10",
            "opencv-python-headless>=4.8",
            "pytorch-msssim>=1.0",
            "tensorboard>=2.10",  # the trainer's optional event files are tested too
            "imageio>=2.20",  # `fastprogan video`: the MP4 path is tested too
            "imageio-ffmpeg>=0.4.7",
        ],
        "bench": ["pytest-benchmark>=4", "matplotlib>=3.6"],
        "tensorboard": ["tensorboard>=2.10"],
        # MP4 for `fastprogan video` (the imageio-ffmpeg wheel ships an ffmpeg binary); without: GIF
        "video": ["imageio>=2.20", "imageio-ffmpeg>=0.4.7"],
    },
    entry_points={"console_scripts": ["fastprogan = fastprogan.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
