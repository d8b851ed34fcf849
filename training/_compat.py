"""Import open_clip on machines where torchvision's compiled ops cannot load.

The pinned CPU torch wheel and the torchvision wheel disagree on their C++ ABI here, so
torchvision's ``_C`` extension fails to load and ``import torchvision`` (hence
``import open_clip``) dies with ``RuntimeError: operator torchvision::nms does not exist``:
torchvision registers fake kernels for ``nms`` unconditionally at import time. open_clip
never calls detection ops, so declaring the two operator schemas is enough to import it
(``torchvision.ops.nms`` still raises its own clear error if anyone calls it). This is done
only when the real ops fail to load.

Every training module imports open_clip through :func:`import_open_clip`.
"""

from __future__ import annotations

import sys
from types import ModuleType

__all__ = ["import_open_clip", "ensure_torchvision"]

_MISSING_OP = "operator torchvision::nms does not exist"
_library = None  # keeps the torch.library.Library alive (the definitions vanish with it)


def _define_fallback_ops() -> None:
    """Declare the schemas of ``torchvision::nms`` and ``torchvision::qnms`` (no kernels needed)."""
    global _library
    import torch

    if _library is not None:
        return
    lib = torch.library.Library("torchvision", "DEF")
    schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    lib.define("nms" + schema)
    lib.define("qnms" + schema)
    _library = lib


def ensure_torchvision() -> ModuleType:
    """Import torchvision, declaring its two detection ops first only if the real ones fail to load."""
    try:
        import torchvision
    except RuntimeError as exc:
        if _MISSING_OP not in str(exc):
            raise
        # Drop the half-imported package so the second import starts clean.
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _define_fallback_ops()
        import torchvision
    return torchvision


def import_open_clip() -> ModuleType:
    """``import open_clip`` after :func:`ensure_torchvision`; returns the module."""
    ensure_torchvision()
    import open_clip

    return open_clip
