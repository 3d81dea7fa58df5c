"""Developer tools that prove the kernels without a GPU: ``static_check`` (compile every launchable
config for sm_80/sm_90: registers, spills, shared memory) and ``traffic`` (bytes moved per op)."""
