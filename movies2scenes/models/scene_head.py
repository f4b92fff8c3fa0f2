"""A scene head: attention pooling over frozen shot features, trained on mined scene pairs.

The cheap alternative to the scene ViT (issue 16, an experiment option, not a pipeline stage):
the scene is the *set* of its shots' E_shot features; a learned query attends over them (masking
padded shots) and a small MLP projects the pooled vector. It is trained with the same positives as
the scene encoder — the two scenes of a mined pair — against the other scenes of the batch
(InfoNCE, symmetric). Compared with mean pooling it can learn which shots of a scene carry its
identity (e.g. the wide shot over the close-ups); compared with the scene ViT it sees no pixels
and costs seconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class AttentionPoolHead(nn.Module):
    def __init__(self, dim: int, hidden: int = 256, out_dim: int = 128, heads: int = 4, width: int = 256):
        super().__init__()
        # wide features (e.g. 1280-d ImageNet) are first projected to ``width``: attention over the
        # shots costs O(width²) per shot, and the pooled vector (hence the embedding) is ``width``-d
        self.inp = nn.Linear(dim, width) if dim > width else nn.Identity()
        dim = min(dim, width)
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        heads = max(h for h in range(1, heads + 1) if dim % h == 0)  # at most ``heads``, dividing dim
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.proj = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def pool(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n, d) shot features (``mask``: True = a real shot) → (B, min(d, width)) pooled + mean."""
        x = self.inp(x)
        h = self.norm(x)
        pad = None if mask is None else ~mask
        pooled, _ = self.attn(self.query.expand(len(x), -1, -1), h, h, key_padding_mask=pad, need_weights=False)
        if mask is None:
            mean = x.mean(1)
        else:
            mean = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return pooled[:, 0] + mean  # residual: starts as the mean the head must beat

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(self.pool(x, mask))


def pair_loss(za: torch.Tensor, zb: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE: scene a's positive is its pair's scene b, the batch's others negatives."""
    za, zb = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    logits = za @ zb.T / temperature
    labels = torch.arange(len(za), device=za.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def fit_pairs(score, params, scenes_a: np.ndarray, scenes_b: np.ndarray, steps: int, batch: int, lr: float,
              seed: int) -> None:
    """The pair-training loop the scene head and the factorised encoder share: ``score`` maps
    (B, n, d) windows to the vectors the InfoNCE pair loss compares; seeded batches of pairs, both
    directions, AdamW on ``params``."""
    if len(scenes_a) != len(scenes_b) or len(scenes_a) < 2:
        raise ValueError(f"need two aligned sets of at least 2 scenes, got {len(scenes_a)} and {len(scenes_b)}")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    xa = torch.from_numpy(np.asarray(scenes_a, np.float32))
    xb = torch.from_numpy(np.asarray(scenes_b, np.float32))
    for _ in range(steps):
        idx = torch.randperm(len(xa), generator=g)[:batch]
        swap = torch.rand(len(idx), generator=g) < 0.5  # both directions, as the scene encoder
        a = torch.where(swap[:, None, None], xb[idx], xa[idx])
        b = torch.where(swap[:, None, None], xa[idx], xb[idx])
        loss = pair_loss(score(a), score(b))
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_scene_head(scenes_a: np.ndarray, scenes_b: np.ndarray, steps: int = 300, batch: int = 64,
                     lr: float = 1e-3, seed: int = 0, **kw) -> AttentionPoolHead:
    """Train on (P, n, d) feature windows of the two scenes of P pairs; seeded, CPU-cheap."""
    torch.manual_seed(seed)
    head = AttentionPoolHead(scenes_a.shape[2], **kw)
    fit_pairs(head, head.parameters(), scenes_a, scenes_b, steps, batch, lr, seed)
    return head.eval()


@torch.no_grad()
def embed_scenes(head: AttentionPoolHead, clips: list[np.ndarray]) -> np.ndarray:
    """Embeddings (pooled, before the projection — as a ViT's features are read before its MoCo
    head) of clips of any length."""
    out = []
    for x in clips:
        out.append(head.pool(torch.from_numpy(np.asarray(x, np.float32))[None])[0].numpy())
    return np.stack(out)
