"""MoCo (He et al., 2020), in the spirit of facebookresearch/moco's ``builder.py``.

A query encoder (backbone + MLP projection), a momentum copy of it as key encoder, and a queue of
normalised keys. One forward serves both uses in Movies2Scenes: each query comes with candidate
keys and a validity mask, every candidate goes through the key encoder, and the positive logit is
the best valid candidate's (:func:`best_key`); that key is enqueued.

* **shots** (paper Eq. 1): two candidates, shots t−2 and t+2 — the positive logit of query shot t
  is ``max(q·k(t−2), q·k(t+2))``; a missing neighbour (movie edge) is masked out;
* **scenes**: one candidate, the mined partner — the classic pair.

The forward returns (loss, stats): stats holds ``acc1``/``acc5``, how often the positive is the
top-1/top-5 of the 1 + K logits (what moco's main loop prints: it shows learning while the loss
still rises as the queue fills), and for shots ``chosen_t_plus``.

Keys are gathered from every process before they are enqueued, so all ranks hold the same queue.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn



@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes (rank order); identity without torch.distributed."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    world = torch.distributed.get_world_size()
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def projection_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class MoCo(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int = 128, mlp_hidden: int = 2048,
                 queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.07,
                 seed: int = 0):
        super().__init__()
        self.momentum, self.temperature = momentum, temperature
        self.encoder_q = backbone
        self.head_q = projection_mlp(backbone.num_features, mlp_hidden, dim)
        self.encoder_k = copy.deepcopy(self.encoder_q).requires_grad_(False)
        self.head_k = copy.deepcopy(self.head_q).requires_grad_(False)
        # the same generator on every rank: the queue starts identical everywhere
        init = torch.randn(dim, queue_size, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("queue", F.normalize(init, dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    # -- the key encoder ---------------------------------------------------------------------------
    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        params_k = [*self.encoder_k.parameters(), *self.head_k.parameters()]
        params_q = [p.detach() for p in (*self.encoder_q.parameters(), *self.head_q.parameters())]
        # k ← m·k + (1 − m)·q, as one fused multi-tensor operation
        torch._foreach_mul_(params_k, self.momentum)
        torch._foreach_add_(params_k, params_q, alpha=1 - self.momentum)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        keys = concat_all_gather(keys).to(self.queue.dtype)
        size, n = self.queue.shape[1], keys.shape[0]
        if n >= size:  # more keys than room: keep the newest
            self.queue.copy_(keys[-size:].T)
            self.queue_ptr.zero_()
            return
        # the columns ptr, ptr + 1, … wrapping around, computed on the device: no host sync (the
        # pointer never leaves the GPU) and no graph break under torch.compile
        columns = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue.index_copy_(1, columns, keys.T.contiguous())
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    # -- encoders ----------------------------------------------------------------------------------
    def embed_query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_q(self.encoder_q(x)), dim=1)

    @torch.no_grad()
    def embed_key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_k(self.encoder_k(x)), dim=1)

    def _queue(self, like: torch.Tensor) -> torch.Tensor:
        return self.queue.clone().detach().to(like.dtype)

    # -- the forward ---------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]):
        """``query`` and its candidate keys: ``minus``/``plus`` with ``has_minus``/``has_plus``
        (shots, Eq. 1) or ``key`` (a pair). Returns (loss, stats)."""
        query = batch["query"]
        if "minus" in batch:
            keys = torch.stack([batch["minus"], batch["plus"]])
            valid = torch.stack([batch["has_minus"], batch["has_plus"]])
        else:
            keys = batch["key"][None]
            valid = torch.ones(1, len(query), dtype=torch.bool, device=query.device)
        loss, logits, best = self.contrast(query, keys, valid)
        stats = topk_accuracy(logits)
        if len(keys) == 2:
            stats["chosen_t_plus"] = best == 1
        return loss, stats

    def contrast(self, query: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor):
        """MoCo over (K, B, ...) candidate keys of B queries, ``valid`` (K, B): returns the loss, the
        (B, 1 + K_queue) logits and, per query, which candidate was the positive."""
        if not torch.compiler.is_compiling() and not bool(valid.any(0).all()):  # eager only: a host sync
            raise ValueError("every query needs at least one valid key (every query shot a neighbour)")
        return self.contrast_embedded(self.embed_query(query), keys, valid)

    def contrast_embedded(self, q: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor):
        """:meth:`contrast` from the queries' normalised embeddings ``q`` (B, C)."""
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = self.embed_key(keys.flatten(0, 1)).to(q.dtype).unflatten(0, keys.shape[:2])  # (K, B, C)
        l_pos, best = best_key(q, k, valid)
        logits = moco_logits(q, l_pos, self._queue(q), self.temperature)
        self._dequeue_and_enqueue(k[best, torch.arange(len(q), device=q.device)])
        return moco_loss(logits), logits, best


def best_key(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query (q: (B, C)), the largest ``q·k`` over its valid candidates (k: (K, B, C), valid:
    (K, B)) and which candidate that is (ties: the first) — paper Eq. 1 for K = 2."""
    scores = torch.where(valid, (q[None] * k).sum(-1), torch.full_like(k[..., 0], torch.finfo(q.dtype).min))
    best = scores.argmax(0)
    return scores.gather(0, best[None])[0], best


def moco_logits(q: torch.Tensor, l_pos: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, 1 + K): the positive logit first, then the queue's (C × K) negatives, over temperature."""
    return torch.cat([l_pos[:, None], q @ queue], dim=1) / temperature


def moco_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the positive logit (column 0) against the queue's negatives."""
    labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), labels)


@torch.no_grad()
def topk_accuracy(logits: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, torch.Tensor]:
    """Fraction of rows whose positive (column 0) is among the k largest logits, per k
    (``timm.utils.accuracy``, moco's own function, as fractions)."""
    from timm.utils import accuracy

    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return {f"acc{k}": a / 100 for k, a in zip(ks, accuracy(logits, target, topk=ks))}
