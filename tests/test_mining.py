"""Scene-pair mining: the fast path equals the literal definition, the non-overlap invariant holds,
degenerate inputs mine nothing with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from movies2scenes.mining import (
    keep_count,
    mine_pair,
    select_nonoverlapping,
)
from testkit.oracles import mine_pair_reference


def _same(fast, ref):
    assert fast.reason == ref.reason
    assert fast.chosen == ref.chosen
    np.testing.assert_array_equal(fast.start_a, ref.start_a)
    np.testing.assert_array_equal(fast.start_b, ref.start_b)
    np.testing.assert_allclose(fast.score, ref.score, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(40))
def test_fast_equals_reference_on_random_matrices(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    m, k, d = int(rng.integers(n, 40)), int(rng.integers(n, 40)), int(rng.integers(1, 8))
    x1 = rng.normal(size=(m, d)).astype(np.float32)
    x2 = rng.normal(size=(k, d)).astype(np.float32)
    _same(mine_pair(x1, x2, n, 0.5), mine_pair_reference(x1, x2, n, 0.5))


@pytest.mark.parametrize("seed", range(40))
def test_fast_equals_reference_with_many_ties(seed):
    # small integer features: window sums are exact in both paths and equal scores are common,
    # so this checks the tie-break (smaller start in movie a, then in movie b) too
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 5))
    x1 = rng.integers(-1, 2, size=(int(rng.integers(n, 30)), 2)).astype(np.float32)
    x2 = rng.integers(-1, 2, size=(int(rng.integers(n, 30)), 2)).astype(np.float32)
    fast, ref = mine_pair(x1, x2, n, 1.0), mine_pair_reference(x1, x2, n, 1.0)
    _same(fast, ref)


def test_tie_break_is_smaller_start_first():
    scores = torch.zeros(10, 10)  # every window ties
    rows, cols, _ = select_nonoverlapping(scores, 3)
    assert rows.tolist() == [0, 3, 6, 9] and cols.tolist() == [0, 3, 6, 9]


def test_constant_features_choose_a_diagonal():
    x = np.ones((30, 4), np.float32)
    mined = mine_pair(x, x, 9, 1.0)
    assert mined.start_a.tolist() == [0, 9, 18] and mined.start_b.tolist() == [0, 9, 18]


def test_selection_stops_when_the_shorter_movie_is_full():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(20, 256)), rng.normal(size=(400, 256))
    mined = mine_pair(x1, x2, 9, 1.0)
    # movie a has 12 window starts: at most 2 disjoint scenes of 9 fit (e.g. 0 and 9..11)
    assert 1 <= mined.chosen <= 2
    # a planted identical scene is found first
    x2[100:109] = x1[5:14]
    mined = mine_pair(x1, x2, 9, 1.0)
    assert (mined.start_a[0], mined.start_b[0]) == (5, 100)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 60), st.integers(0, 60), st.integers(0, 2**31 - 1),
       st.floats(0.05, 1.0))
def test_chosen_scenes_never_overlap(n, m, k, seed, keep):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(m, 3)), rng.normal(size=(k, 3))
    mined = mine_pair(x1, x2, n, keep)
    if m < n or k < n:
        assert len(mined) == 0 and "shot(s) <" in mined.reason
        return
    assert mined.reason is None
    assert len(mined) == keep_count(mined.chosen, keep) >= 1
    for starts, length in ((mined.start_a, m), (mined.start_b, k)):
        s = np.sort(starts)
        assert np.all(np.diff(s) >= n)  # scenes [s, s + n) are disjoint
        assert s.min() >= 0 and s.max() + n <= length
    assert np.all(np.diff(mined.score) <= 1e-6)  # best first
    # greedy is maximal: with the full selection, no unchosen window fits beside the chosen ones
    full = mine_pair(x1, x2, n, 1.0)
    free_a = [i for i in range(m - n + 1) if np.all(np.abs(i - full.start_a) >= n)]
    free_b = [j for j in range(k - n + 1) if np.all(np.abs(j - full.start_b) >= n)]
    assert not free_a or not free_b


@pytest.mark.parametrize("x1, x2, n, why", [
    (np.zeros((0, 4)), np.ones((20, 4)), 9, "movie a: 0 shot(s) < 9"),
    (np.ones((20, 4)), np.ones((8, 4)), 9, "movie b: 8 shot(s) < 9"),
    (np.ones((20, 4)), np.ones((20, 5)), 9, "feature dimensions differ"),
    (np.ones((20, 0)), np.ones((20, 0)), 9, "dimension 0"),
    (np.ones(20), np.ones((20, 4)), 9, "must be a (shots × dim) matrix"),
])
def test_degenerate_inputs_mine_nothing_with_a_reason(x1, x2, n, why):
    mined = mine_pair(x1, x2, n)
    assert len(mined) == 0 and mined.chosen == 0 and why in mined.reason


def test_nan_features_mine_nothing_and_name_the_shot():
    x1 = np.ones((20, 4), np.float32)
    x1[13, 2] = np.nan
    mined = mine_pair(x1, np.ones((20, 4)), 9)
    assert len(mined) == 0 and mined.reason == "movie a: non-finite features (first at shot 13)"
    mined = mine_pair(torch.ones(20, 4), torch.full((20, 4), float("inf")), 9)
    assert mined.reason == "movie b: non-finite features (first at shot 0)"


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="keep_fraction"):
        mine_pair(np.ones((20, 2)), np.ones((20, 2)), 9, 0.0)
    with pytest.raises(ValueError, match="shots per scene"):
        mine_pair(np.ones((20, 2)), np.ones((20, 2)), 0)


def test_keep_count_is_ceil():
    assert [keep_count(c, 0.5) for c in (0, 1, 2, 3, 4)] == [0, 1, 1, 2, 2]
    assert keep_count(7, 1.0) == 7


@pytest.mark.parametrize("seed", range(20))
def test_torch_and_numpy_selection_agree(seed):
    # the torch path is the one CUDA tensors take; here it runs on CPU tensors through the private
    # function so that both implementations are checked on every machine
    from movies2scenes.mining import _select_numpy, _select_torch

    rng = np.random.default_rng(2000 + seed)
    n = int(rng.integers(1, 6))
    scores = rng.integers(-3, 4, size=(int(rng.integers(1, 40)), int(rng.integers(1, 40)))).astype(np.float32)
    a, b = _select_numpy(scores, n), _select_torch(torch.from_numpy(scores), n)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_a_3000_shot_film_pair_is_mined_whole():
    """Feature-length films: mining uses every shot (no max_shots), 3,000 × 2,800 shots. Five scenes
    planted in both films (9 shots of one place each, at other positions) are found, at their starts."""
    import resource
    import time

    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 64)).astype(np.float32)
    b = rng.normal(size=(2800, 64)).astype(np.float32)
    starts_a, starts_b = [100, 900, 1500, 2200, 2900], [2700, 40, 1300, 600, 2000]
    for i, j in zip(starts_a, starts_b):
        place = rng.normal(size=64).astype(np.float32) * 3  # a scene: shots of one place
        a[i:i + 9] = place + rng.normal(size=(9, 64))
        b[j:j + 9] = place + rng.normal(size=(9, 64))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    mined = mine_pair(torch.from_numpy(a), torch.from_numpy(b), 9, 0.5)
    seconds = time.perf_counter() - t
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"3000 × 2800 shots: {seconds:.2f} s, {mined.chosen} chosen, {len(mined.score)} kept, "
          f"peak RSS +{grown_mb:.0f} MB")
    top = set(zip(mined.start_a[:5].tolist(), mined.start_b[:5].tolist()))
    assert top == set(zip(starts_a, starts_b))
    assert mined.chosen <= 2800 // 9  # non-overlapping: at most N/n
    assert len(mined.score) == keep_count(mined.chosen, 0.5)
    # the window scores are one (M − n + 1) × (N − n + 1) float32 matrix (~34 MB here) and a
    # few of its size: nothing near M·N·n²
    assert grown_mb < 400


@pytest.mark.parametrize("shape", [(12, 60), (60, 12), (30, 30)])
def test_every_label_of_the_adjacency_figure_fits_at_its_real_size(shape):
    """Issue 42 (8): on non-square heatmaps the colour-bar label was clipped and the footnote sat
    over the x tick labels. Drawn at the size it is saved at, every text is inside the figure and
    the footnote overlaps no tick label."""
    from movies2scenes.report import _adjacency

    a = np.random.default_rng(0).standard_normal(shape)
    fig = _adjacency(a, [0, 3], [1, 4], 1, 3, "m0001 × m0002 (cowatch): 2 chosen, 1 kept", "shots of m0002",
                     "shots of m0001")
    fig.set_dpi(100)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box, drawn = fig.bbox, fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # inches → pixels
    assert drawn.x0 >= box.x0 - 1 and drawn.x1 <= box.x1 + 1 and drawn.y0 >= box.y0 - 1 and drawn.y1 <= box.y1 + 1
    bar_label = fig.axes[1].yaxis.label.get_window_extent(renderer)
    assert bar_label.x1 <= box.x1 and bar_label.y0 >= box.y0 and bar_label.y1 <= box.y1  # the colour-bar label
    foot = fig._supxlabel.get_window_extent(renderer)
    assert not foot.overlaps(fig.axes[0].xaxis.get_tightbbox(renderer))  # ticks and the axis label
    import matplotlib.pyplot as plt
    plt.close(fig)
