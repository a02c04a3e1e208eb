"""InceptionV3 pool features (2048-d) for FID/KID on any images: an optional extra.

Uses torch-fidelity's port of the TensorFlow FID network, so the numbers are comparable with
published FIDs. Its weights (pt_inception-2015-12-05-6726825d.pth) are downloaded by torch-fidelity
when online; offline, point GANKIT_INCEPTION_WEIGHTS at a copy of that file.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch

from gankit.errors import UserError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
HOW = (f"install it with `pip install gankit[inception]` (torch-fidelity, which needs torchvision) and, offline, "
       f"set GANKIT_INCEPTION_WEIGHTS to a copy of {WEIGHTS_FILE}")


@lru_cache(maxsize=1)
def load_inception():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as exc:  # missing, or torchvision that does not import beside this torch
        raise UserError(f"InceptionV3 metrics need torch-fidelity ({type(exc).__name__}: {exc}); {HOW}")
    path = os.environ.get("GANKIT_INCEPTION_WEIGHTS")
    if path and not os.path.isfile(path):
        raise UserError(f"GANKIT_INCEPTION_WEIGHTS = '{path}' is not a file; {HOW}")
    try:
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path).eval()
    except OSError as exc:
        raise UserError(f"the InceptionV3 weights could not be loaded or downloaded ({exc}); {HOW}")


@torch.no_grad()
def inception_features(images_uint8: np.ndarray, batch: int = 100) -> tuple[np.ndarray]:
    """(features (N, 2048),) for uint8 images (N, H, W, C); grey images are repeated to RGB."""
    model = load_inception()
    x = torch.as_tensor(np.asarray(images_uint8)).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    device = next(model.parameters()).device
    out = [model(part.to(device))[0].double().cpu() for part in x.split(batch)]
    return (torch.cat(out).numpy(),)
