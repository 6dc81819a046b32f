"""Conv-Gate fusion of high-res ConvNeXt features into low-res CLIP tokens (MG-LLaVA, spec §1.4).

Parameter names match the released MG-LLaVA checkpoints (`fuse_module.{slow_conv,slow_proj,fast_conv,
fast_proj}.*`, `fuse_module.gate.{0,2}.*`).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvGateFusion(nn.Module):
    """out = lo + tanh(gate) * hi, one scalar gate per image.

    low  (B, N, D) with N = g*g tokens on a square grid; high (B, C, h, w).
    With `zero_init` both projections start at zero, so the module is the identity on `low` at init.
    If (h, w) != (g, g) the high-res map is bilinearly resampled to the token grid when
    `resample_mismatch` is set, otherwise a ValueError names both grids.
    """

    def __init__(self, low_res_dim, high_res_dim, zero_init=True, resample_mismatch=True):
        super().__init__()
        self.resample_mismatch = resample_mismatch
        self.slow_conv = nn.Conv2d(high_res_dim, high_res_dim, 1)
        self.slow_proj = nn.Conv2d(high_res_dim, low_res_dim, 1)
        self.fast_conv = nn.Conv2d(low_res_dim, low_res_dim, 7, padding=3, groups=low_res_dim)
        self.fast_proj = nn.Conv2d(low_res_dim, low_res_dim, 1)
        self.gate = nn.Sequential(nn.Linear(low_res_dim * 2, low_res_dim // 2), nn.GELU(),
                                  nn.Linear(low_res_dim // 2, 1))
        for conv in (self.slow_conv, self.fast_conv):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        if zero_init:
            for proj in (self.slow_proj, self.fast_proj):
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def forward(self, low, high):
        b, n, d = low.shape
        g = math.isqrt(n)
        if g * g != n:
            raise ValueError(f'ConvGateFusion needs a square token grid, got {n} tokens')
        if high.shape[-2:] != (g, g):
            if not self.resample_mismatch:
                raise ValueError(f'high-res grid {tuple(high.shape[-2:])} does not match the low-res token grid '
                                 f'({g}, {g}); pick image_size_aux = 32 * {g} or enable resample_mismatch')
            high = F.interpolate(high.float(), size=(g, g), mode='bilinear', align_corners=False).to(high.dtype)
        high = high.to(low.dtype)
        hi = self.slow_proj(F.gelu(self.slow_conv(high))).flatten(2).transpose(1, 2)  # (B, N, D)
        lo = low.transpose(1, 2).reshape(b, d, g, g)
        lo = (lo + self.fast_proj(F.gelu(self.fast_conv(lo)))).flatten(2).transpose(1, 2)  # (B, N, D)
        gate = self.gate(torch.cat([lo, hi], dim=-1).mean(dim=1)).unsqueeze(1)  # (B, 1, 1)
        return lo + gate.tanh() * hi
