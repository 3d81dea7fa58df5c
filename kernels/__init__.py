"""Triton device code for fastprogan (installed as ``fastprogan.kernels``).

Only @triton.jit kernels and their launch helpers live here; autograd, dispatch and validation are in
``fastprogan.ops``. Importing this package does not import Triton: each kernel module does.
"""
