"""Export the generator alone (torch.export), to sample without gankit or its training code.

The file holds an exported program whose batch size is free: vectors come out float32 in the
data's own units, images as uint8 (N, H, W, C). Its metadata (z size, noise kind, classes, shape)
rides along as gankit.json:

    files = {"gankit.json": ""}
    g = torch.export.load("generator.pt2", extra_files=files).module()
    meta = json.loads(files["gankit.json"])
    z = torch.randn(16, meta["z_dim"])          # torch.rand(...) * 2 - 1 when meta["noise"] == "uniform"
    z = z * meta.get("z_std", 1.0)              # the noise's spread (files exported before it: 1)
    # when meta["z_categories"] = K > 0: z = torch.cat([z, one_hot(randint(K, (16,)), K).float()], 1)
    with torch.no_grad():
        out = g(z)                              # conditional runs: g(z, torch.full((16,), 3))
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from gankit.io import atomic_write


class _Export(nn.Module):
    """The generator plus the step from its output to what a user wants (data units or uint8)."""

    def __init__(self, g: nn.Module, mean: torch.Tensor, std: torch.Tensor, is_image: bool, output: str):
        super().__init__()
        self.g, self.is_image, self.tanh = g, is_image, output == "tanh"
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = self.g(z, labels)
        if not self.is_image:
            return out * self.std + self.mean
        x = (out.clamp(-1, 1) + 1) / 2 if self.tanh else out.clamp(0, 1)
        return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def export_generator(sampler, out: Path) -> Path:
    cfg = sampler.config
    module = _Export(sampler.generator.eval(), sampler.mean, sampler.std, sampler.is_image, cfg.model.g_output).eval()
    z = sampler.noise(4, seed=0)
    batch = torch.export.Dim("batch")
    if sampler.num_classes:
        example, dynamic = (z, torch.arange(4) % sampler.num_classes), {"z": {0: batch}, "labels": {0: batch}}
    else:
        example, dynamic = (z,), {"z": {0: batch}}
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=dynamic)
    meta = {"z_dim": cfg.model.z_dim, "noise": cfg.model.noise, "z_std": cfg.model.z_std,
            "z_categories": cfg.model.z_categories,
            "num_classes": sampler.num_classes,
            "shape": list(sampler.shape), "output": "uint8 (N, H, W, C)" if sampler.is_image else "float32 (N, D)"}
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda fh: torch.export.save(program, fh, extra_files={"gankit.json": json.dumps(meta)}))
