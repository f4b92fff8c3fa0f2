"""MoCo: the max-of-neighbours positive (paper Eq. 1), the queue, and the queue across processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from movies2scenes.models.moco import MoCo, best_key, moco_logits, moco_loss

ROOT = Path(__file__).resolve().parents[1]


class Flat(nn.Module):
    """A stand-in backbone: flatten + linear."""

    def __init__(self, in_dim=12, out=8):
        super().__init__()
        self.num_features = out
        self.lin = nn.Linear(in_dim, out)

    def forward(self, x):
        return self.lin(x.flatten(1))


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_positive_is_the_better_neighbour():
    q = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    k_minus = unit([0.9, 0.1, 0], [0, 0, 1], [0, 0, 1])  # row 0: minus wins; row 1: plus wins
    k_plus = unit([0, 1, 0], [0.2, 0.8, 0], [0, 1, 0])
    queue = unit([0, 0, 1], [1, 1, 1]).T  # C × K
    has = torch.tensor([True, True, True])
    no_minus = torch.tensor([True, True, False])  # row 2 sits at a movie edge: only t+2 exists
    k = torch.stack([k_minus, k_plus])  # the two candidates of every query

    def eq1(valid):
        l_pos, best = best_key(q, k, torch.stack(valid))
        return moco_loss(moco_logits(q, l_pos, queue, 0.1)), best == 1

    loss, chosen = eq1([has, has])
    assert chosen.tolist() == [False, True, False]
    # Eq. 1 by hand
    pos = torch.stack([(q[0] * k_minus[0]).sum(), (q[1] * k_plus[1]).sum(), (q[2] * k_minus[2]).sum()])
    logits = torch.cat([pos[:, None], q @ queue], 1) / 0.1
    assert torch.allclose(loss, F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)))
    # at the edge the missing neighbour never counts, even when it would have been better
    loss_edge, chosen_edge = eq1([no_minus, has])
    assert chosen_edge.tolist() == [False, True, True]
    pos[2] = (q[2] * k_plus[2]).sum()
    logits = torch.cat([pos[:, None], q @ queue], 1) / 0.1
    assert torch.allclose(loss_edge, F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)))
    # one candidate, always valid: the classic pair
    l_pos, best = best_key(q, k_plus[None], torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(l_pos, (q * k_plus).sum(1)) and not best.any()


def test_forward_enqueues_the_chosen_keys_and_rejects_shots_without_neighbours():
    torch.manual_seed(0)
    m = MoCo(Flat(), dim=4, mlp_hidden=16, queue_size=8, momentum=0.9, temperature=0.2)
    x = torch.randn(3, 12)
    batch = {"query": x, "minus": torch.randn(3, 12), "plus": torch.randn(3, 12),
             "has_minus": torch.tensor([True, False, True]), "has_plus": torch.tensor([True, True, False])}
    loss, stats = m(batch)
    chosen = stats["chosen_t_plus"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert chosen[1] and not chosen[2]  # edges forced
    keys = m.embed_key(torch.cat([batch["minus"], batch["plus"]]))
    want = torch.where(chosen[:, None], keys[3:], keys[:3])
    assert torch.allclose(m.queue[:, :3].T, want, atol=1e-6) and int(m.queue_ptr) == 3
    batch["has_minus"] = torch.tensor([False, False, True])
    batch["has_plus"] = torch.tensor([False, True, True])
    with pytest.raises(ValueError, match="neighbour"):
        m(batch)


def test_contrastive_accuracy_of_the_positive():
    """acc1/acc5 as moco's main loop computes them: the positive's rank among the 1 + K logits."""
    from movies2scenes.models.moco import topk_accuracy

    logits = torch.tensor([[5.0, 1, 2, 3, 4, 0, 0], [1.0, 2, 3, 4, 5, 6, 0], [1.0, 5, 4, 3, 2, 0, 0]])
    acc = topk_accuracy(logits)
    assert acc["acc1"].item() == pytest.approx(1 / 3) and acc["acc5"].item() == pytest.approx(2 / 3)
    torch.manual_seed(0)
    m = MoCo(Flat(), dim=8, mlp_hidden=16, queue_size=64)
    x = torch.randn(32, 12)
    _, same = m({"query": x, "key": x})  # key encoder = query encoder at init: the positive wins
    assert same["acc1"].item() == 1.0
    _, other = m({"query": x, "key": torch.randn(32, 12)})  # unrelated keys: about chance, 1/65
    assert other["acc1"].item() < 0.25 and other["acc5"].item() >= other["acc1"].item()


def test_queue_pointer_wraps_around():
    m = MoCo(Flat(), dim=2, mlp_hidden=4, queue_size=5)
    for i in range(3):  # 3 × 2 keys into 5 slots
        m._dequeue_and_enqueue(torch.full((2, 2), float(i + 1)))
    # slots: keys 1 → [0, 1], keys 2 → [2, 3], keys 3 → [4, 0]
    assert m.queue[0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]
    assert int(m.queue_ptr) == 1
    m._dequeue_and_enqueue(torch.full((7, 2), 9.0))  # more keys than slots: the newest win
    assert m.queue[0].tolist() == [9.0] * 5


def test_momentum_update_moves_keys_towards_queries():
    m = MoCo(Flat(), dim=4, mlp_hidden=8, queue_size=4, momentum=0.5)
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.encoder_k.parameters()]
    m._momentum_update_key_encoder()
    for b, k, q in zip(before, m.encoder_k.parameters(), m.encoder_q.parameters()):
        assert torch.allclose(k, 0.5 * b + 0.5 * q)
    assert not any(p.requires_grad for p in m.encoder_k.parameters())


def test_two_processes_hold_identical_queues():
    """torchrun --nproc_per_node 2 on CPU (gloo): keys are gathered before they are enqueued."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29600 + os.getpid() % 1000),
                        str(ROOT / "tests" / "dist_moco_queue.py")],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "queues identical on 2 ranks" in r.stdout


def test_knn_monitor_tells_a_useful_encoder_from_a_useless_one():
    """Probe items of 4 'movies' (each a noisy variant of its own pattern): an encoder that sees the
    pattern scores 1, one that outputs noise scores about chance (0.25)."""
    import numpy as np

    from movies2scenes.monitor import KnnMonitor

    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(4, 12, generator=g)
    labels = np.repeat(np.arange(4), 20)
    views = patterns[labels] + 0.3 * torch.randn(80, 12, generator=g)
    is_query = np.tile(np.arange(20) >= 10, 4)
    monitor = KnnMonitor(views, labels, is_query)
    assert monitor.usable and monitor.chance == 0.25
    assert monitor(nn.Identity()) == 1.0

    class Noise(nn.Module):
        def forward(self, x):
            return torch.randn(len(x), 12, generator=g)

    assert monitor(Noise()) < 0.6
