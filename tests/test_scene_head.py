"""The scene head (attention pooling over shot features, trained on scene pairs) learns which
shots of a scene carry its identity, where the mean cannot."""

from __future__ import annotations

import numpy as np
import torch

from movies2scenes.models.scene_head import AttentionPoolHead, embed_scenes, train_scene_head


def _scenes(ids: np.ndarray, rng, n: int = 6) -> np.ndarray:
    """One scene per identity: a marked 'wide' shot (its identity, marker dim = 1) among n - 1
    close-ups of random content in the same dims (marker 0), in random order."""
    d = ids.shape[1]
    x = rng.normal(0, 1.0, (len(ids), n, d + 1)).astype(np.float32)
    x[..., d] = 0
    where = rng.integers(n, size=len(ids))
    x[np.arange(len(ids)), where, :d] = ids + rng.normal(0, 0.1, ids.shape)
    x[np.arange(len(ids)), where, d] = 1.0
    return x


def _p_at_1(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(((a @ b.T).argmax(1) == np.arange(len(a))).mean())


def test_head_finds_the_identity_shot_that_the_mean_dilutes():
    rng = np.random.default_rng(0)
    train_ids, test_ids = rng.normal(0, 1, (400, 16)), rng.normal(0, 1, (100, 16))  # unseen identities
    head = train_scene_head(_scenes(train_ids, rng), _scenes(train_ids, rng), steps=300, batch=64, seed=0)
    qa, qb = _scenes(test_ids, rng), _scenes(test_ids, rng)
    mean = _p_at_1(qa.mean(1), qb.mean(1))
    learned = _p_at_1(embed_scenes(head, list(qa)), embed_scenes(head, list(qb)))
    assert learned > mean + 0.3, (learned, mean)


def test_padding_is_masked_and_training_is_seeded():
    x = torch.randn(2, 5, 8)
    head = AttentionPoolHead(8, hidden=16, out_dim=8, heads=2).eval()
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    padded = x.clone()
    padded[0, 3:] = 1e3  # what sits in padded slots must not matter
    with torch.no_grad():
        assert torch.allclose(head.pool(x, mask)[0], head.pool(padded, mask)[0], atol=1e-5)
        assert torch.allclose(head.pool(x[:1, :3])[0], head.pool(x, mask)[0], atol=1e-5)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(32, 4, 8)).astype(np.float32), rng.normal(size=(32, 4, 8)).astype(np.float32)
    h1, h2 = (train_scene_head(a, b, steps=5, batch=8, seed=3, hidden=16, out_dim=8, heads=2) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(h1.state_dict().values(), h2.state_dict().values()))


def test_wide_features_are_projected_first():
    head = AttentionPoolHead(1280, width=64)
    x = torch.randn(3, 9, 1280)
    assert head.pool(x).shape == (3, 64) and head(x).shape == (3, 128)
    assert isinstance(AttentionPoolHead(96, width=256).inp, torch.nn.Identity)  # E_shot's 96-d: as before
