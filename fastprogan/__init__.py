"""fastprogan: fast Progressive Growing of GANs for PyTorch.

Layers point one way: kernels -> ops -> nn -> models -> training / cli. Importing the package is
light: sub-packages load on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
