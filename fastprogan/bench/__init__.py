"""``fastprogan bench``: the instrument that measures every GPU claim (docs/benchmarks.md).

In order, so that a run cut short keeps the most important rows: the correctness smoke of every Triton
kernel on the device (:mod:`.smoke`), the training iteration per provider (:mod:`.train`), every op per
provider with its roofline fraction (:mod:`.ops`) and the dispatch table ``impl="auto"`` loads
(:mod:`.dispatch`), within ``--budget-s`` (:mod:`.runner`); then report.md and PNGs (:mod:`.report`).
Providers and problems are registries (:mod:`.registry`): each fast path adds one entry.
"""
