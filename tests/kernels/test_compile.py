"""torch.compile(fullgraph=True) traces modules that use the fastprogan custom ops without graph breaks.

``backend="aot_eager"``: it runs Dynamo and AOTAutograd (what fullgraph and the custom ops' fake /
autograd registrations are about) without Inductor's C++ code generation, which costs 10-20 s per
graph on this 2-core CPU and adds nothing to the question asked here.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastprogan import ops


class GBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4, 3, 3) * 0.2)
        self.b = nn.Parameter(torch.randn(8))

    def forward(self, x):
        h = ops.upscale_conv2d(x, self.w)
        return ops.bias_act(h, self.b, 0.2, pixel_norm=True, impl="triton")


class DBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 9, 3, 3) * 0.2)
        self.b = nn.Parameter(torch.randn(8))

    def forward(self, x):
        h = ops.minibatch_stddev(x, 2, impl="triton")
        return ops.bias_act(F.conv2d(h, self.w, padding=1), self.b, 0.2, impl="triton")


def _fwd_bwd(module, x):
    x = x.detach().requires_grad_()
    y = module(x)
    y.square().sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in module.parameters()]


def test_fullgraph_compile_matches_eager(check_close):
    torch._dynamo.reset()
    for module, x in ((GBlock(), torch.randn(2, 4, 4, 4)), (DBlock(), torch.randn(4, 8, 4, 4))):
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        y_c, gx_c, gp_c = _fwd_bwd(compiled, x)
        module.zero_grad()
        y_e, gx_e, gp_e = _fwd_bwd(module, x)
        check_close(y_c, y_e, rtol=1e-6, atol=1e-6, what="forward")
        check_close(gx_c, gx_e, rtol=1e-5, atol=1e-6, what="grad x")
        for a, b in zip(gp_c, gp_e):
            check_close(a, b, rtol=1e-5, atol=1e-6, what="grad param")


def test_compiled_graph_calls_the_custom_ops():
    torch._dynamo.reset()
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch.compile(GBlock(), fullgraph=True, backend=backend)(torch.randn(2, 4, 4, 4))
    torch.compile(DBlock(), fullgraph=True, backend=backend)(torch.randn(4, 8, 4, 4))
    assert any("bias_act_pixel_norm" in s for s in seen), seen
    assert any("minibatch_stddev" in s for s in seen), seen
