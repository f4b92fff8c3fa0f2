"""The factorised scene encoder's model (issue 26, first part): at step 0 it is exactly the mean of
its shot tokens, any number of shots works, padded shots change nothing, and training makes it see
what a mean cannot (the order of shots)."""

import pytest
import torch

from movies2scenes.models.factorised import FactorisedSceneEncoder, TemporalResidual, resample_shot_positions


@pytest.mark.parametrize("n", [1, 3, 9, 14])
@pytest.mark.parametrize("width", [None, 16])
def test_untrained_encoder_is_exactly_the_mean(n, width):
    torch.manual_seed(0)
    enc = TemporalResidual(48, shots=9, width=width).eval()
    tokens = torch.randn(5, n, 48)
    assert torch.equal(enc(tokens), tokens.mean(1))


def test_shot_positions_resample_to_any_n():
    pos = torch.randn(1, 9, 8)
    assert resample_shot_positions(pos, 9) is pos
    r = resample_shot_positions(pos, 17)
    assert r.shape == (1, 17, 8) and torch.allclose(r[:, 0], pos[:, 0]) and torch.allclose(r[:, -1], pos[:, -1])
    assert torch.allclose(r[:, 2], pos[:, 1])  # 17 positions: every other one is an original position


def test_padded_shots_change_nothing():
    torch.manual_seed(0)
    enc = TemporalResidual(32, shots=6)
    with torch.no_grad():
        enc.out.weight.normal_(0, 0.1)  # a trained-looking residual
    tokens = torch.randn(2, 6, 32)
    padded = torch.cat([tokens, torch.randn(2, 3, 32)], 1)
    mask = torch.tensor([[True] * 6 + [False] * 3] * 2)
    with torch.no_grad():
        assert torch.allclose(enc(padded, mask), enc(tokens), atol=1e-5)


def test_training_learns_the_order_a_mean_cannot_see():
    """Windows of 4 shots of kind A then 4 of kind B (say wide shots, then close-ups), and the
    reverse, have the same mean; after a few hundred steps on CPU the encoder maps them to different
    targets, which at step 0 it cannot (its output is the mean)."""
    torch.manual_seed(0)
    d = 16
    enc = TemporalResidual(d, shots=8, depth=1)
    opt = torch.optim.AdamW(enc.parameters(), lr=3e-3)
    target = {0: torch.randn(d), 1: torch.randn(d)}
    kind_a, kind_b = torch.randn(d), torch.randn(d)

    def batch(size=32):
        a = kind_a + 0.3 * torch.randn(size, 1, d)
        b = kind_b + 0.3 * torch.randn(size, 1, d)
        first = torch.cat([a.expand(-1, 4, -1), b.expand(-1, 4, -1)], 1)
        second = torch.cat([b.expand(-1, 4, -1), a.expand(-1, 4, -1)], 1)
        return first, second

    first, second = batch()
    with torch.no_grad():
        assert torch.allclose(enc(first), enc(second), atol=1e-5)
    for _ in range(300):
        first, second = batch()
        mean = first.mean(1)
        loss = ((enc(first) - mean - target[0]) ** 2).mean() + ((enc(second) - mean - target[1]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, second = batch(64)
    with torch.no_grad():
        gap = (enc(first) - enc(second)).norm(dim=1).mean()
    assert gap > 0.7 * (target[0] - target[1]).norm(), (float(gap), float((target[0] - target[1]).norm()))


def test_pixels_through_a_frozen_backbone_start_at_the_shot_mean():
    import timm

    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    enc = FactorisedSceneEncoder(backbone, backbone.num_features, shots=3).eval()
    x = torch.randn(2, 3, 2, 3, 32, 32)  # 2 scenes of 3 shots x 2 frames
    with torch.no_grad():
        per_frame = backbone(x.flatten(0, 2)).reshape(2, 3, 2, -1)
        assert torch.equal(enc(x), per_frame.mean(2).mean(1))
    enc.train()
    enc(x).sum().backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert enc.temporal.out.weight.grad is not None and enc.temporal.out.weight.grad.abs().sum() > 0


def test_trained_on_pairs_it_moves_off_the_mean_and_embeds_any_length():
    """train_factorised on feature windows of paired scenes (the frozen-backbone case): seeded (same
    result twice), its output differs from the mean after training, and clips of other lengths embed."""
    import numpy as np

    from movies2scenes.models.factorised import embed_windows, train_factorised

    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 1, 12)).astype(np.float32)
    a = base + 0.3 * rng.normal(size=(40, 5, 12)).astype(np.float32)
    b = base + 0.3 * rng.normal(size=(40, 5, 12)).astype(np.float32)
    enc = train_factorised(a, b, steps=30, batch=16, seed=1)
    again = train_factorised(a, b, steps=30, batch=16, seed=1)
    clips = [a[0], a[1][:3], np.concatenate([a[2], a[3]])]
    e = embed_windows(enc, clips)
    assert e.shape == (3, 12) and np.array_equal(e, embed_windows(again, clips))
    assert not np.allclose(e[0], a[0].mean(0), atol=1e-4)
