"""Regenerate ``digits16.npz``, the embedded quick-start dataset (run once by a maintainer).

    pip install scikit-learn   # only for this script; not a fastprogan dependency
    python fastprogan/data/default/make_default.py

Source: the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998; CC BY 4.0)
as bundled with scikit-learn's ``load_digits``: 1,797 real 8x8 scans with 17 gray levels (0..16).
Each image is scaled to 0..255 (round(v * 255 / 16)) and upscaled to 16x16 with Pillow bicubic, so a
CPU demo can grow 4 -> 8 -> 16. The output is deterministic: same input, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # [1797, 8, 8]
    big = np.stack(
        [np.asarray(Image.fromarray(im).resize((16, 16), Image.Resampling.BICUBIC)) for im in small]
    )  # [1797, 16, 16]
    labels = digits.target.astype(np.uint8)  # [1797]
    out = Path(__file__).with_name("digits16.npz")
    np.savez_compressed(out, images=big, labels=labels)
    print(f"wrote {out}: images {big.shape} {big.dtype}, {out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
