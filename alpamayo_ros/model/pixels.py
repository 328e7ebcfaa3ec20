"""Qwen2-VL image preprocessing in torch, on the model's device.

The host path (`PromptEncoder.pixels`, the transformers processor) resizes with PIL on the CPU and sends
float32 patches to the device: at 1080p that is 16 PIL resizes per tick and 4x the bytes of the raw
image. Here the uint8 frame is uploaded as it is (copied into pinned memory on a GPU, so that the
upload itself does not block the host) and
resized (bicubic, antialiased, rounded to uint8 levels as PIL does), rescaled, normalised and cut into
the processor's patch layout on the device. Resizing differs from PIL's by at most a few uint8 levels
on some pixels (measured in the tests); with no resize the patches equal the processor's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor, smart_resize


class DevicePixels:
    """(H, W, 3) uint8 RGB -> (patches (n, C * temporal * patch^2) float32 on `device`, grid (1, 3) int64)."""

    def __init__(self, processor: Qwen2VLImageProcessor, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.patch = processor.patch_size
        self.temporal = processor.temporal_patch_size
        self.merge = processor.merge_size
        self.min_pixels = processor.size["shortest_edge"]
        self.max_pixels = processor.size["longest_edge"]
        self.rescale = float(processor.rescale_factor) if processor.do_rescale else 1.0
        mean = processor.image_mean if processor.do_normalize else [0.0] * 3
        std = processor.image_std if processor.do_normalize else [1.0] * 3
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.pin = self.device.type == "cuda"

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The processor's target size: multiples of patch * merge, pixel count within range."""
        return smart_resize(height, width, factor=self.patch * self.merge, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels)

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = self.size(*image.shape[:2])
        if self.pin:  # one copy into page-locked memory, then an upload that does not stall the host
            frame = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
            frame.numpy()[...] = image
        else:  # decoded JPEG/PNG frames are read-only arrays, which torch does not wrap
            frame = torch.from_numpy(image if image.flags.writeable else image.copy())
        x = frame.to(self.device, non_blocking=True).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        # PIL resamples width then height, rounding to uint8 after each pass; so does this.
        for size in ((x.shape[-2], width), (height, width)):
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
                x = x.round_().clamp_(0, 255)
        x = (x * self.rescale - self.mean) / self.std
        # A still image is its own temporal pair; then the processor's order: merge blocks, within each
        # block its patches row-major, each patch flattened as (channel, time, row, column).
        grid_h, grid_w = height // self.patch, width // self.patch
        m, p = self.merge, self.patch
        x = x.expand(self.temporal, -1, -1, -1).reshape(1, self.temporal, 3, grid_h // m, m, p, grid_w // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(grid_h * grid_w, 3 * self.temporal * p * p)
        return x, torch.tensor([[1, grid_h, grid_w]], dtype=torch.int64)
