"""MoCo (He et al., 2020), in the spirit of facebookresearch/moco's ``builder.py``.

A query encoder (backbone + MLP projection), a momentum copy of it as key encoder, and a queue of
normalised keys. One class serves both uses in Movies2Scenes:

* **shots** (:meth:`MoCo.forward_neighbours`, paper Eq. 1): the positive logit of query shot t is
  ``max(q·k(t−2), q·k(t+2))`` — both neighbours are encoded by the key encoder and the better one
  counts; a missing neighbour (movie edge) is masked out; the chosen key is enqueued.
* **scenes** (:meth:`MoCo.forward_pair`): the classic pair, query scene and its mined partner.

Both return (loss, stats): stats holds ``acc1``/``acc5``, how often the positive is the top-1/top-5
of the 1 + K logits (what moco's main loop prints: it shows learning while the loss still rises as
the queue fills), and for shots ``chosen_t_plus``.

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
            self.queue_ptr[0] = 0
            return
        ptr = int(self.queue_ptr)
        first = min(n, size - ptr)
        self.queue[:, ptr:ptr + first] = keys[:first].T
        self.queue[:, : n - first] = keys[first:].T  # wrap around
        self.queue_ptr[0] = (ptr + n) % size

    # -- encoders ----------------------------------------------------------------------------------
    def embed_query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_q(self.encoder_q(x)), dim=1)

    @torch.no_grad()
    def embed_key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_k(self.encoder_k(x)), dim=1)

    def _queue(self, like: torch.Tensor) -> torch.Tensor:
        return self.queue.clone().detach().to(like.dtype)

    # -- the two uses ------------------------------------------------------------------------------
    def forward_neighbours(self, query: torch.Tensor, minus: torch.Tensor, plus: torch.Tensor,
                           has_minus: torch.Tensor, has_plus: torch.Tensor):
        """Shot MoCo (Eq. 1). Returns (loss, stats); stats["chosen_t_plus"]: per row, whether t+2 was the positive.

        Every row needs at least one neighbour (the data pipeline skips shots with none)."""
        if not bool((has_minus | has_plus).all()):
            raise ValueError("every query shot needs at least one neighbour")
        q = self.embed_query(query)
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = self.embed_key(torch.cat([minus, plus])).to(q.dtype)
            k_minus, k_plus = k.chunk(2)
        pos_minus, pos_plus = neighbour_logits(q, k_minus, k_plus, has_minus, has_plus)
        chosen = pos_plus > pos_minus
        logits = moco_logits(q, torch.where(chosen, pos_plus, pos_minus), self._queue(q), self.temperature)
        self._dequeue_and_enqueue(torch.where(chosen[:, None], k_plus, k_minus))
        return _loss(logits), {**topk_accuracy(logits), "chosen_t_plus": chosen}

    def forward_pair(self, query: torch.Tensor, key: torch.Tensor):
        """Classic MoCo: the positive of each query is its own key. Returns (loss, stats)."""
        q = self.embed_query(query)
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = self.embed_key(key).to(q.dtype)
        logits = moco_logits(q, (q * k).sum(1), self._queue(q), self.temperature)
        self._dequeue_and_enqueue(k)
        return _loss(logits), topk_accuracy(logits)

    def forward(self, batch: dict[str, torch.Tensor]):
        """A batch with ``minus``/``plus`` neighbours → shot MoCo; with ``key`` → pair MoCo."""
        if "minus" in batch:
            return self.forward_neighbours(batch["query"], batch["minus"], batch["plus"],
                                           batch["has_minus"], batch["has_plus"])
        return self.forward_pair(batch["query"], batch["key"])


def moco_logits(q: torch.Tensor, l_pos: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, 1 + K): the positive logit first, then the queue's (C × K) negatives, over temperature."""
    return torch.cat([l_pos[:, None], q @ queue], dim=1) / temperature


def _loss(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), labels)


def infonce(q: torch.Tensor, l_pos: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of the positive logit against the queue's (C × K) negatives."""
    return _loss(moco_logits(q, l_pos, queue, temperature))


def neighbour_infonce(q, k_minus, k_plus, has_minus, has_plus, queue, temperature):
    """Paper Eq. 1: positive logit max(q·k(t−2), q·k(t+2)) over the neighbours that exist.

    Returns (loss, chosen) with chosen = True where k(t+2) was the positive."""
    pos_minus, pos_plus = neighbour_logits(q, k_minus, k_plus, has_minus, has_plus)
    chosen = pos_plus > pos_minus
    return infonce(q, torch.where(chosen, pos_plus, pos_minus), queue, temperature), chosen


def neighbour_logits(q, k_minus, k_plus, has_minus, has_plus):
    """``q·k(t−2)`` and ``q·k(t+2)`` per row, −inf where that neighbour does not exist."""
    neg_inf = torch.finfo(q.dtype).min
    pos_minus = torch.where(has_minus, (q * k_minus).sum(1), torch.full_like(q[:, 0], neg_inf))
    pos_plus = torch.where(has_plus, (q * k_plus).sum(1), torch.full_like(q[:, 0], neg_inf))
    return pos_minus, pos_plus


@torch.no_grad()
def topk_accuracy(logits: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, torch.Tensor]:
    """Fraction of rows whose positive (column 0) is among the k largest logits, per k
    (``timm.utils.accuracy``, moco's own function, as fractions)."""
    from timm.utils import accuracy

    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return {f"acc{k}": a / 100 for k, a in zip(ks, accuracy(logits, target, topk=ks))}
