"""torch.compile(fullgraph=True) traces G and D without graph breaks.

aot_eager runs Dynamo and AOTAutograd (the parts that break graphs or reject ops) in ~2 s; Inductor's
CPU code generation would add ~35 s here without proving more about graph breaks.
"""

import torch

from fastprogan.models import Discriminator, Generator


def test_generator_and_discriminator_compile_fullgraph():
    torch.manual_seed(0)
    G = Generator(16, fmap_base=64, fmap_max=16)
    D = Discriminator(16, fmap_base=64, fmap_max=16)
    z = torch.randn(4, G.latent_size)
    torch._dynamo.reset()
    g = torch.compile(G, fullgraph=True, backend="aot_eager")
    d = torch.compile(D, fullgraph=True, backend="aot_eager")
    img = g(z, 0.5)  # mid-fade at 16x16
    torch.testing.assert_close(img, G(z, 0.5), rtol=0, atol=0)
    torch.testing.assert_close(d(img, 0.5), D(img, 0.5), rtol=1e-6, atol=1e-6)
    d(img, 0.5).sum().backward()  # the compiled backward runs too
    assert all(p.grad is not None for p in D.blocks["16x16"].parameters())
