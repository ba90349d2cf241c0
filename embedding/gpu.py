"""Preprocessing on the GPU: what a fixed-size processor does with PIL on the CPU, in a few kernels per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class DevicePixelTransform:
    """Crops -> model input on the GPU: uint8 copied from pinned memory, then one resize + normalise there.

    Used for fixed-size, squash-resize processors (SigLIP's): what the processor does
    with PIL on the CPU, done in a few GPU kernels per batch.
    """

    def __init__(
        self,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        scale: float,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        import torch

        self.size = size
        self.device = device
        self.dtype = dtype
        self.scale = scale
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    @classmethod
    def from_processor(cls, image_processor: Any, device: torch.device, dtype: torch.dtype) -> DevicePixelTransform | None:
        """The transform equivalent to ``image_processor``, or None where it is not a plain squash-resize."""
        size = getattr(image_processor, "size", None) or {}
        height, width = (size.get(key) if isinstance(size, dict) else getattr(size, key, None) for key in ("height", "width"))
        if not (height and width):
            return None  # shortest-edge + centre crop (CLIP) or NaFlex (SigLIP2): the processor's own path
        if getattr(image_processor, "do_center_crop", False) or not getattr(image_processor, "do_resize", True):
            return None
        mean = image_processor.image_mean if getattr(image_processor, "do_normalize", True) else [0.0] * 3
        std = image_processor.image_std if getattr(image_processor, "do_normalize", True) else [1.0] * 3
        scale = float(image_processor.rescale_factor) if getattr(image_processor, "do_rescale", True) else 1.0
        return cls((int(height), int(width)), mean, std, scale, device, dtype)

    def __call__(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        pin = self.device.type == "cuda"
        out = []
        for array in arrays:
            host = torch.from_numpy(array)
            if pin:
                host = host.pin_memory()
            image = host.to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).float()
            out.append(F.interpolate(image, size=self.size, mode="bicubic", antialias=True, align_corners=False))
        batch = torch.cat(out).clamp_(0, 255) * self.scale
        return ((batch - self.mean) / self.std).to(self.dtype)
