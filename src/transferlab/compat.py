"""Workarounds for third-party packaging problems, each in one place and each saying why.

torchvision on a CPU-only torch: PyPI's torchvision wheels are built against the CUDA build of torch, so beside the
CPU build (what this project installs: ``torch==2.13.0+cpu``) their compiled ops (``torchvision::nms`` and friends,
used only by detection models) cannot load. torchvision's ``__init__`` then fails while registering fake kernels
for those missing ops ("operator torchvision::nms does not exist"; pytorch/vision#9085, pytorch/pytorch#122494),
and so does every import of ``torchvision.transforms`` — and of ``transformers``, which imports torchvision when it
is installed. The fix upstream is a ``+cpu`` torchvision from PyTorch's own index, which cannot be reached here.
``import_torchvision`` declares the schemas of the ops that the import registers fakes for (no kernels: calling
them still fails, and nothing here calls them) and imports again. It does nothing when torchvision imports cleanly.
"""

from __future__ import annotations

import sys

_DECLARED = []  # the torch.library.Library holding the declared schemas must stay alive


def import_torchvision():
    """``import torchvision``, working around the CPU-torch import failure described above."""
    try:
        import torchvision

        return torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e) or "does not exist" not in str(e):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so the next import starts over
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):  # the ops torchvision/_meta_registrations.py registers fakes for by name
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _DECLARED.append(lib)
    import torchvision

    return torchvision
