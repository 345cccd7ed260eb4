"""Small, fast image helpers shared by motion detection and the simulated camera."""

from __future__ import annotations

import numpy as np


def box_downscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks of a 2-D array into float32.

    Sums strided views instead of reducing a reshaped array: numpy reduces
    non-contiguous axes slowly, and this runs on every frame.
    """
    if factor == 1:
        return img.astype(np.float32)
    h, w = img.shape[0] // factor, img.shape[1] // factor
    acc = np.zeros((h, w), dtype=np.float32)
    for dy in range(factor):
        for dx in range(factor):
            acc += img[dy : h * factor : factor, dx : w * factor : factor]
    acc *= 1.0 / (factor * factor)
    return acc


def luma_u8(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an ``(h, w, 3)`` uint8 RGB frame, in integer arithmetic."""
    r = rgb[:, :, 0].astype(np.uint16)
    g = rgb[:, :, 1].astype(np.uint16)
    b = rgb[:, :, 2].astype(np.uint16)
    return ((77 * r + 150 * g + 29 * b + 128) >> 8).astype(np.uint8)
