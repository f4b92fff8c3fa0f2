"""The movie encoder E_movie and its adjacency-pooling head (paper §3.2).

Two movies' frozen shot features (each padded/cropped to L shots, 1024 in the paper) →
``E_movie = FC(512) → dropout 0.5 → FC(512)`` per shot → shot adjacency ``A = E(x1)·E(x2)ᵀ`` (L × L)
(scaled by 1/√512, as attention logits, so SGD at lr 0.1 stays stable)
→ average pool (kernel 16, stride 8: scene adjacency B) → max pool (16, 8) → flatten → linear →
one logit: "similar by S" vs random pair.

**Padding never manufactures similarity.** A padded shot row/column of A is masked: the average
pool averages valid entries only (a window's sum of valid entries ÷ their count), a window with no
valid entry becomes −inf before the max pool, and a max-pool window with nothing valid becomes 0 —
a constant, the same whatever the padding holds and however much of it there is. So the logit of a
movie padded with zeros equals the logit of the same movie padded with anything else.

Scene mining (``shot_embeddings``) uses E_movie *without its last FC* (paper supplement).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def pooled_size(length: int, kernel: int, stride: int) -> int:
    avg = (length - kernel) // stride + 1
    out = (avg - kernel) // stride + 1
    if avg < 1 or out < 1:
        raise ValueError(f"max_shots {length} is too short for two poolings of kernel {kernel}, "
                         f"stride {stride}")
    return out


class MovieEncoder(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 512, dropout: float = 0.5,
                 max_shots: int = 1024, kernel: int = 16, stride: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.kernel, self.stride, self.max_shots = kernel, stride, max_shots
        side = pooled_size(max_shots, kernel, stride)
        self.classifier = nn.Linear(side * side, 1)

    def shot_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """E_movie without its last FC: the features scene mining compares."""
        return self.fc1(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.fc1(x)))

    def adjacency(self, x1, m1, x2, m2) -> tuple[torch.Tensor, torch.Tensor]:
        """A = E(x1)·E(x2)ᵀ (B × L × L) and its validity mask."""
        # scaled like attention logits (÷√d) so that SGD at the paper's lr 0.1 stays stable
        a = self.embed(x1) @ self.embed(x2).transpose(1, 2) / self.fc2.out_features ** 0.5
        mask = (m1[:, :, None] & m2[:, None, :]).to(a.dtype)
        return a * mask, mask

    def forward(self, x1: torch.Tensor, m1: torch.Tensor, x2: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
        """x: (B, L, d) shot features, m: (B, L) bool, True for real shots. Returns (B,) logits."""
        a, mask = self.adjacency(x1, m1, x2, m2)
        k, s = self.kernel, self.stride
        total = F.avg_pool2d(a[:, None], k, s)
        count = F.avg_pool2d(mask[:, None], k, s)
        valid = count > 0
        scene = torch.where(valid, total / count.clamp_min(1e-12), torch.full_like(total, float("-inf")))
        pooled = F.max_pool2d(scene, k, s)
        any_valid = F.max_pool2d(valid.to(a.dtype), k, s) > 0
        pooled = torch.where(any_valid, pooled, torch.zeros_like(pooled))  # NaN still propagates
        return self.classifier(pooled.flatten(1)).squeeze(1)


def pad_or_crop(x: torch.Tensor, length: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, d) → ((length, d), mask): rows ``offset:offset+length`` if M > length, else zero-padded."""
    m, d = x.shape
    if m >= length:
        return x[offset:offset + length], torch.ones(length, dtype=torch.bool)
    out = torch.zeros(length, d, dtype=x.dtype)
    out[:m] = x
    mask = torch.zeros(length, dtype=torch.bool)
    mask[:m] = True
    return out, mask


def load_movie_encoder(path: str | Path, device="cpu") -> MovieEncoder:
    """A saved movie encoder (``movie_encoder/``), checked against its weights first, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    c = checked_movie_config(path)
    model = MovieEncoder(c["in_dim"], c["hidden"], c["out_dim"], c["dropout"], c["max_shots"],
                         c["kernel"], c["stride"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval()


def checked_movie_config(path: Path) -> dict:
    """config.json of a saved movie encoder, its types and its shapes checked against the
    safetensors header before anything is built (a hostile config cannot exhaust memory)."""
    from .folder import read_model_config
    from .weights import ModelFileError, shape_mismatches, weight_shapes

    c, where = read_model_config(path), path / "config.json"
    for key in ("in_dim", "hidden", "out_dim", "max_shots", "kernel", "stride"):
        if not isinstance(c.get(key), int) or isinstance(c.get(key), bool) or c[key] < 1:
            raise ModelFileError(f"{where}: {key} must be an integer >= 1, got {c.get(key)!r}")
    if not isinstance(c.get("dropout"), (int, float)) or not 0 <= c["dropout"] < 1:
        raise ModelFileError(f"{where}: dropout must be a number in [0, 1), got {c.get('dropout')!r}")
    for key in ("feature_mean", "feature_std"):
        v = c.get(key)
        if not (isinstance(v, list) and len(v) == c["in_dim"] and all(isinstance(x, (int, float)) for x in v)):
            raise ModelFileError(f"{where}: {key} must be a list of in_dim ({c['in_dim']}) numbers")
    try:
        side = pooled_size(c["max_shots"], c["kernel"], c["stride"])
    except ValueError as e:
        raise ModelFileError(f"{where}: {e}") from None
    expected = {"fc1.weight": (c["hidden"], c["in_dim"]), "fc1.bias": (c["hidden"],),
                "fc2.weight": (c["out_dim"], c["hidden"]), "fc2.bias": (c["out_dim"],),
                "classifier.weight": (1, side * side), "classifier.bias": (1,)}
    bad = shape_mismatches(expected, weight_shapes(path / "model.safetensors"))
    if bad:
        raise ModelFileError(f"{where} does not match {path / 'model.safetensors'}: " + "; ".join(bad))
    return c
