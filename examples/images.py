"""A small image classification set made on the spot, no download: ``data.module: examples.images:make``.

Ten classes of oriented gratings, 16×16 pixels, 3 channels: class k is a sinusoidal grating at
k·18° (jittered by up to ±4.5°), of random spatial frequency and phase, each channel with its own
gain, under Gaussian noise of the grating's own amplitude. Telling neighbouring orientations apart
through the noise takes a model a few hundred steps: hard enough for the learning rate to matter,
small enough for two CPU cores. The same seed gives the same images on every machine.

mutune's data-module contract (docs/mup.md): a function returning ``(train, val)``, each an
iterable of ``(x, y)`` pairs, one example or one batch at a time (here: batches of 256).
"""

from __future__ import annotations

import math

import torch

CLASSES = 10


def gratings(
    n: int, generator: torch.Generator, image: int = 16, channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, channels, image, image) and their classes (n,)."""
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    jitter = (torch.rand(n, generator=generator) - 0.5) * math.pi / (2 * CLASSES)
    theta = y * math.pi / CLASSES + jitter
    freq = 1.5 + 2.5 * torch.rand(n, generator=generator)  # cycles across the image
    phase = 2 * math.pi * torch.rand(n, generator=generator)
    coords = torch.arange(image, dtype=torch.float32) / image - 0.5
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    along = col[None] * torch.cos(theta)[:, None, None] + row[None] * torch.sin(theta)[:, None, None]
    wave = torch.sin(2 * math.pi * freq[:, None, None] * along + phase[:, None, None])
    gain = 0.5 + torch.rand(n, channels, 1, 1, generator=generator)
    noise = torch.randn(n, channels, image, image, generator=generator)
    return wave[:, None] * gain + noise, y


def make(train: int = 8192, val: int = 1024, seed: int = 0) -> tuple[list, list]:
    """(train, val): lists of (x, y) batches of 256 examples."""
    g = torch.Generator().manual_seed(seed)
    xt, yt = gratings(train, g)
    xv, yv = gratings(val, g)
    return list(zip(xt.split(256), yt.split(256), strict=True)), list(
        zip(xv.split(256), yv.split(256), strict=True)
    )
