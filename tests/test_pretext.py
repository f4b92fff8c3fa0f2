"""Issue 40: the factorised head's training terms (masked shot modelling, order negatives,
pseudo-boundary) and the GRU head — what each term may and may not see, step 0 still the mean, and
the stage with every term on: it trains, exports through load_scene_encoder, and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from movies2scenes.models.factorised import GruResidual, TemporalResidual, temporal_head
from movies2scenes.models.pretext import PretextMoCo, PretextTerms

ROOT = Path(__file__).resolve().parents[1]
HEADS = ["transformer", "gru"]


def _model(head: str, **weights):
    torch.manual_seed(0)
    enc = temporal_head(head, 24, 6, 1, 4, 2.0, 16)
    terms = PretextTerms(enc.width, 24, **({"msm": 1.0, "order_negatives": 1.0, "boundary": 1.0} | weights))
    return enc, PretextMoCo(enc, terms, 8, 16, 32, 0.9, 0.2, seed=0)


@pytest.mark.parametrize("head", HEADS)
def test_step_0_is_exactly_the_mean_with_every_term_on(head):
    enc, model = _model(head)
    x = torch.randn(5, 6, 24)
    with torch.no_grad():
        assert torch.equal(enc(x), x.mean(1))
        loss, stats = model({"query": x, "key": torch.randn(5, 6, 24)})
    assert torch.isfinite(loss) and {"pair_loss", "msm_loss", "order_loss", "boundary_loss"} <= stats.keys()


@pytest.mark.parametrize("head", HEADS)
def test_a_hidden_shot_cannot_leak_its_own_feature_into_any_prediction(head):
    """MSM hides shots before the temporal head: changing a hidden shot's feature changes nothing
    the decoder sees, at any position; changing a visible one does."""
    enc, model = _model(head)
    terms = model.terms
    x = torch.randn(4, 6, 24)
    torch.manual_seed(3)
    hide = terms.hidden(4, 6, x.device)
    assert (hide.sum(1) == round(0.4 * 6)).all()
    with torch.no_grad():
        enc.out.weight.normal_()  # a trained-looking head: nothing depends on the zero start
        before = terms.decoder(enc.contextual(x, hide=hide, fill=terms.fill))
        y = x.clone()
        y[hide] += 5 * torch.randn_like(y[hide])
        after = terms.decoder(enc.contextual(y, hide=hide, fill=terms.fill))
        assert torch.equal(before, after)
        z = x.clone()
        z[~hide] += 1.0
        assert not torch.allclose(before, terms.decoder(enc.contextual(z, hide=hide, fill=terms.fill)))


def test_order_negatives_skip_windows_their_reordering_cannot_change():
    """A one-shot window and a window of identical shots have no order to negate: left out, never
    a negative equal to the positive; other windows get a shuffle other than themselves."""
    enc, model = _model("transformer", msm=0.0, boundary=0.0)
    x = torch.randn(6, 5, 24)
    shuffled, reversed_ = PretextTerms.reorderings(x)
    assert all(not torch.equal(shuffled[i], x[i]) for i in range(6))
    assert torch.equal(reversed_, x.flip(1))
    same = torch.randn(3, 1, 24).expand(3, 5, 24).contiguous()
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    loss = model.terms.order_loss(model, same, q, torch.ones(3))
    assert loss.item() == 0.0  # every row left out
    single = torch.randn(3, 1, 24)
    assert model.terms.order_loss(model, single, q, torch.ones(3)).item() == 0.0


def test_a_pairs_free_encoder_trains_on_its_terms_alone():
    """pairs: 0 — the pair loss is logged but not trained on; the order term's positive is then the
    window itself, so the loss is exactly the order term (which is > 0 at step 0)."""
    enc, model = _model("transformer", msm=0.0, boundary=0.0, pairs=0.0)
    loss, stats = model({"query": torch.randn(6, 6, 24), "key": torch.randn(6, 6, 24)})
    assert loss.item() == pytest.approx(stats["order_loss"].item()) and stats["pair_loss"].item() > 0


def test_the_pseudo_boundary_is_where_neighbouring_shots_differ_most():
    enc, model = _model("transformer", msm=0.0, order_negatives=0.0)
    a, b = torch.randn(24), torch.randn(24)
    x = torch.stack([a, a + 0.01 * torch.randn(24), a, b, b + 0.01 * torch.randn(24), b])[None]  # gap after shot 2
    torch.manual_seed(0)
    with torch.no_grad():
        model.terms.boundary_head.weight.zero_()
        model.terms.boundary_head.bias.zero_()
        uniform = model.terms.boundary_loss(enc, x).item()
    assert uniform == pytest.approx(np.log(5), rel=1e-5)  # 5 gaps, none favoured
    opt = torch.optim.Adam(list(model.terms.parameters()) + list(enc.parameters()), lr=1e-2)
    for _ in range(40):
        loss = model.terms.boundary_loss(enc, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1  # the target is gap 2, and it can be learned


def test_a_gru_head_round_trips_through_its_file(tmp_path):
    from movies2scenes.models.factorised import load_temporal, save_temporal

    torch.manual_seed(1)
    enc = GruResidual(24, 6, depth=2, width=16)
    with torch.no_grad():
        enc.out.weight.normal_()
    settings = save_temporal(enc, tmp_path)
    assert settings["head"] == "gru" and "head" not in TemporalResidual(24, 6).settings  # old files stay as they were
    back = load_temporal(tmp_path, settings)
    x = torch.randn(3, 7, 24)
    with torch.no_grad():
        assert torch.equal(back(x), enc.eval()(x))
        mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6])
        padded = back(x, mask)
        assert torch.allclose(padded[1], back(x[1:2, :4])[0], atol=1e-6)  # padding changes nothing


def test_term_settings_are_checked():
    from movies2scenes.config import ConfigError, load

    base = [ROOT / "configs" / "cpu-tiny.yaml"]
    with pytest.raises(ConfigError, match="scene_encoder.factorised.msm must be a finite weight"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.msm=-1"])
    with pytest.raises(ConfigError, match="mask_ratio must be in"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.mask_ratio=1.0"])
    with pytest.raises(ConfigError, match="need factorised.backbone: frozen"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.backbone=finetune",
                    "scene_encoder.factorised.boundary=1"])
    with pytest.raises(ConfigError, match="factorised.pairs must be a finite weight >= 0, and > 0 unless"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.pairs=0"])
    with pytest.raises(ConfigError, match="head"):
        load(base, ["scene_encoder.arch=factorised", "scene_encoder.factorised.head=lstm"])


# ----------------------------------------------------------------------------------------------
# the stage with every term on

TERMS = ["scene_encoder.arch=factorised", "scene_encoder.train.max_steps=6", "scene_encoder.train.knn_every=2",
         "scene_encoder.train.checkpoint_every=3", "scene_encoder.train.batch_size=4",
         "scene_encoder.factorised.keep=last", "scene_encoder.factorised.msm=1",
         "scene_encoder.factorised.order_negatives=1", "scene_encoder.factorised.boundary=1"]


def _copy(mined_run, dest: Path, extra: list[str]) -> tuple[Path, list[str]]:
    from helpers import scene_encoder_run

    return scene_encoder_run(mined_run, dest, *TERMS, *extra)


@pytest.mark.slow
@pytest.mark.parametrize("head", HEADS)
def test_stage_with_every_term_trains_exports_and_resumes_exactly(mined_run, tmp_path, head):
    """Every term on: the losses are logged, the export holds the temporal head alone and loads
    through load_scene_encoder to what the trained head gives on the stored features; a run killed
    at its first checkpoint ends with the same weights as an uninterrupted one."""
    from helpers import export_matches_features, kill_when
    from movies2scenes.config import load
    from movies2scenes.models.factorised import load_temporal
    from movies2scenes.stages import export, train_scene_encoder

    extra = [f"scene_encoder.factorised.head={head}"]
    straight, ov = _copy(mined_run, tmp_path / "a", extra)
    killed, ov_k = _copy(mined_run, tmp_path / "b", extra)
    cfg = load([ROOT / "configs" / "cpu-tiny.yaml"], ov)
    assert train_scene_encoder.run(cfg) == 0
    kill_when(["train-scene-encoder", "-c", "configs/cpu-tiny.yaml", *ov_k], ROOT,
              killed / "scene_encoder" / "checkpoints" / "checkpoint-00000003")
    assert train_scene_encoder.run(load([ROOT / "configs" / "cpu-tiny.yaml"], ov_k)) == 0
    a = load_file(str(straight / "scene_encoder" / "temporal.safetensors"))
    b = load_file(str(killed / "scene_encoder" / "temporal.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith(("decoder", "fill", "boundary_head")) for k in a)  # the terms stay behind
    assert a["out.weight"].abs().sum() > 0
    ckpt = sorted((straight / "scene_encoder" / "checkpoints").glob("checkpoint-*"))[-1]
    logged = json.loads((ckpt / "progress.json").read_text())["logged"]
    assert {"pair_loss", "msm_loss", "order_loss", "boundary_loss"} <= logged.keys()
    assert export.run(cfg) == 0
    settings = json.loads((straight / "scene_encoder" / "movies2scenes.json").read_text())
    temporal = load_temporal(straight / "scene_encoder", settings["temporal"])
    assert type(temporal).__name__ == ("GruResidual" if head == "gru" else "TemporalResidual")
    export_matches_features(straight, temporal)  # the export loads and equals the trained head


@pytest.mark.parametrize("key, value", [("heads", 0), ("mlp_ratio", -1.0), ("width", 0), ("shots", float("inf")),
                                        ("depth", 2.5), ("dim", 1e400), ("width", 999)])
def test_bad_numbers_in_saved_temporal_settings_are_refused_naming_the_key(tmp_path, key, value):
    """Issue 41 class 4: a saved temporal section is range-checked like a config (a ModelFileError,
    exit 2 at the CLI) instead of a ValueError / ZeroDivisionError / OverflowError traceback."""
    from movies2scenes.models.factorised import load_temporal, save_temporal
    from movies2scenes.models.weights import ModelFileError

    settings = save_temporal(TemporalResidual(24, 6, width=16), tmp_path) | {key: value}
    with pytest.raises(ModelFileError, match=f"temporal.{key} "):
        load_temporal(tmp_path, settings)
