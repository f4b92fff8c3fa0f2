"""The exported, frozen scene encoder, in timm's own folder format:

* ``model.safetensors`` — the timm ViT's state dict (``SceneViT.vit``);
* ``config.json`` — timm's (``architecture``, ``num_features``, ``model_args``, ``pretrained_cfg``
  with input size, mean, std, interpolation and crop), so the standard timm user path works::

      m = timm.create_model("local-dir:PATH", pretrained=True)
      tf = timm.data.create_transform(**timm.data.resolve_model_data_config(m))

* ``movies2scenes.json`` — the scene settings: ``vit``, n shots per scene, k frames per shot, the
  shots stage's detection settings (``m2s embed`` uses them by default), the input layout;
* ``README.md`` — a model card with Hub front matter (license, library_name: timm, tags, metrics);
* ``scene_encoder.arch: factorised`` only: ``temporal.safetensors`` and ``arch``/``temporal`` in
  movies2scenes.json; ``model.safetensors`` is then the frozen *shot* backbone (see
  ``models/factorised.py``).

The scene encoder (any number of shots n and frames per shot k) loads with
``movies2scenes.load_scene_encoder(path)``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from .config import RUNTIME_KEYS
from .models.factorised import TEMPORAL_FILE, FactorisedSceneEncoder, load_temporal
from .models.folder import SETTINGS_FILE, checked_vit_config, load_vit, read_model_config, timm_config
from .models.vit import SceneViT, create_vit
from .models.weights import ModelFileError
from .store import atomic_path, write_json

INPUT_LAYOUT = "(B, n shots, k frames, 3, H, W); (B, 3, H, W) = one frame"


def export_scene_encoder(encoder_dir: str | Path, out_dir: str | Path, card: dict,
                         card_file: str = "README.md") -> dict:
    """Copy a trained scene encoder into ``out_dir`` in timm's format plus our settings and a model
    card (``card_file``). ``card``: name, version, license, shots (the shots stage's settings),
    frames_per_shot, data summary, config and metrics (free-form dicts). Returns the settings
    (movies2scenes.json)."""
    src, out = Path(encoder_dir), Path(out_dir)
    if not (src / "config.json").is_file() and (src / TEMPORAL_FILE).is_file():
        raise ModelFileError(f"{src}: a factorised scene encoder trained on imported shot features has no pixel "
                             f"backbone to export; use its {TEMPORAL_FILE} on your own shot features "
                             "(movies2scenes.models.factorised.load_temporal)")
    meta = read_model_config(src)
    cfg = checked_vit_config(src, meta)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        shutil.copyfile(src / "model.safetensors", tmp)
    factorised = meta.get("arch", "joint") == "factorised"
    if not factorised:
        (out / TEMPORAL_FILE).unlink(missing_ok=True)  # an earlier factorised export's
    else:
        load_temporal(src, meta.get("temporal"))  # checked against its weights before it is copied
        with atomic_path(out / TEMPORAL_FILE) as tmp:
            shutil.copyfile(src / TEMPORAL_FILE, tmp)
    timm_cfg = timm_config(cfg, meta["num_features"])
    shots = {k: v for k, v in card.get("shots", {}).items() if k not in RUNTIME_KEYS}
    settings = {
        "name": card.get("name", "movies2scenes-scene-encoder"),
        "vit": meta["vit"],
        "num_features": meta["num_features"],
        "shots_per_scene": meta["shots_per_scene"],
        "frames_per_shot": shots.get("keyframes", card.get("frames_per_shot", 1)),
        "shots": shots,
        "input_layout": INPUT_LAYOUT,
        "movies2scenes": card.get("version", ""),
    }
    if factorised:
        settings |= {"arch": "factorised", "temporal": meta["temporal"]}
    write_json(out / "config.json", timm_cfg)
    write_json(out / SETTINGS_FILE, settings)
    with atomic_path(out / card_file) as tmp:
        tmp.write_text(model_card(timm_cfg, settings, card), encoding="utf-8")
    write_json(out / CARD_DATA, card)
    return settings


def _front_matter(settings: dict, card: dict) -> list[str]:
    """Hub model-card front matter, written by huggingface_hub's ``ModelCardData`` (no network).
    Its model-index holds evaluations of this encoder only (``card["evaluation"]``: m2s evaluate's
    tasks, finite numbers), never training-batch figures, counts, losses or NaN."""
    from huggingface_hub import EvalResult, ModelCardData

    metrics = []
    # only evaluations of the scene encoder (m2s evaluate's linear probe per task); the pretraining
    # stages' training-batch and movie-pair figures are in the card's body, named as such (issue 42)
    for task, entry in sorted((card.get("evaluation") or {}).items()):
        value = (entry.get("encoder") or {}).get("linear") if isinstance(entry, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics.append((f"{task}.{entry.get('metric', 'score')}", value))
    results = [EvalResult(task_type="scene-representation", dataset_type="custom",
                          dataset_name=card.get("dataset_name", "evaluation tasks (m2s evaluate, linear probe)"),
                          metric_type=name.split(".")[-1], metric_name=name, metric_value=float(value))
               for name, value in metrics[:40]]
    data = ModelCardData(license=card.get("license", "other"), library_name="timm",
                         pipeline_tag="image-feature-extraction",
                         tags=["timm", "movies2scenes", "video", "scene-representation", "self-supervised", "moco"],
                         datasets=card.get("datasets") or None, model_name=settings["name"],
                         eval_results=results or None)
    return ["---", data.to_yaml(), "---", ""]


DESCRIPTION_JOINT = [
    "A frozen **scene encoder** pretrained with Movies2Scenes (Chen et al., CVPR 2023) by the",
    "`movies2scenes` pipeline: a timm ViT that reads n shots × k keyframes as one token sequence",
    "(positional embedding resampled from one frame's grid), trained by MoCo on similar scene pairs",
    "mined from similar movies. Output: one embedding per scene (the class token, no projection head).",
]
DESCRIPTION_FACTORISED = [
    "A frozen **factorised scene encoder** pretrained with Movies2Scenes (Chen et al., CVPR 2023) by the",
    "`movies2scenes` pipeline: each shot's k keyframes through the shot backbone below (frozen; the mean",
    "of its frames is the shot's token), then the mean of the n shot tokens plus a residual from a",
    f"small transformer over them (`{TEMPORAL_FILE}`), trained by MoCo on similar scene pairs mined",
    "from similar movies. Output: one embedding per scene (no projection head). The architecture and",
    "`local-dir:` path below are the single-frame *shot* backbone's.",
]


def model_card(timm_cfg: dict, settings: dict, card: dict) -> str:
    def block(title: str, data) -> str:
        return f"## {title}\n\n```json\n{json.dumps(data, indent=2, sort_keys=True)}\n```\n"

    n, k = settings["shots_per_scene"], settings["frames_per_shot"]
    size = timm_cfg["pretrained_cfg"]["input_size"][1]
    return "\n".join(_front_matter(settings, card) + [
        f"# {settings['name']}",
        "",
        *(DESCRIPTION_FACTORISED if settings.get("arch") == "factorised" else DESCRIPTION_JOINT),
        "",
        f"* architecture: `{timm_cfg['architecture']}` {timm_cfg['model_args']}",
        f"* trained on scenes of n = {n} shots × k = {k} keyframe(s), {size} px; any n and k work at inference",
        *([f"* context: trained to read a scene inside a window of {ctx} of its movie's shots (the scene's own "
           "shots pooled); `m2s embed` reads each scene in its movie's context, `--alone` reads it alone"]
          if (ctx := (settings.get("temporal") or {}).get("context", 0)) else []),
        f"* embedding dimension: {timm_cfg['num_features']}",
        f"* preprocessing: short side to {size} px (bilinear), centre crop {size} px, ImageNet mean/std"
        " (`pretrained_cfg` in config.json)",
        "",
        "## Use",
        "",
        "Scenes (n shots × k frames each), with movies2scenes:",
        "",
        "```python",
        "from movies2scenes import load_scene_encoder",
        "encoder = load_scene_encoder('PATH')          # frozen, eval mode",
        "emb = encoder(scenes)                          # scenes: (B, n, k, 3, H, W), normalised",
        "```",
        "",
        "One frame, in plain timm (no movies2scenes code):",
        "",
        "```python",
        "import timm, torch",
        "from PIL import Image",
        "m = timm.create_model('local-dir:PATH', pretrained=True).eval()",
        "tf = timm.data.create_transform(**timm.data.resolve_model_data_config(m))",
        "with torch.no_grad():",
        "    emb = m(tf(Image.open('frame.jpg').convert('RGB'))[None])   # (1, num_features)",
        "```",
        "",
        "Or from the command line, with the shot settings it was trained with (movies2scenes.json):",
        "`m2s embed VIDEO... --encoder PATH --out scenes.parquet`.",
        "",
        block("Pretraining data", card.get("data", {})),
        block("Training configuration", card.get("config", {})),
        *evaluation_section(card.get("evaluation")),
        block("Training figures (not evaluations: contrastive accuracy of training batches, the movie "
              "encoder's held-out movie pairs)", card.get("metrics", {})),
        "## Limitations",
        "",
        "Embeddings reflect the catalogue and metadata it was trained on; movie-level similarity",
        "signals (co-watch, genre) carry their biases into the scene space. Check the metrics above",
        "on your own labelled data before relying on it.",
        "",
    ])


def evaluation_section(evaluation: dict | None) -> list[str]:
    """The card's "Evaluation" section: each task of ``m2s evaluate``'s report with the verdict
    against the mean of the shot features and its interval, or a line saying it is not there yet."""
    from movies2scenes.eval_report import task_line

    if not evaluation:
        return ["## Evaluation", "", "Not evaluated yet: `m2s evaluate` adds its tasks, the verdicts against the "
                "mean of the shot features and their 95 % intervals here.", ""]
    lines = ["## Evaluation", "", "`m2s evaluate` (linear probe, paired movie-level intervals):", ""]
    lines += [f"* **{task}**: {task_line(entry)}" for task, entry in sorted(evaluation.items())]
    return lines + [""]


CARD_DATA = "card.json"  # what the card is written from, so evaluate can add its results to it


def refresh_card(export_dir: str | Path, evaluation: dict) -> str:
    """Rewrite ``export_dir``'s README.md with ``evaluation`` (report.json's tasks) — only when it is
    the card export wrote (its sha256 in export/DONE.json's ``card``): a card someone edited is
    theirs. Records the new card's sha256 there. Returns what was done, for the stage's last line."""
    from movies2scenes.integrity import read_done
    from movies2scenes.layout import DONE
    from movies2scenes.store import read_json, sha256_file, write_json

    out = Path(export_dir)
    readme, done = out / "README.md", out / DONE
    rec = read_done(done)
    written = (rec.get("card") or {}).get("README.md")
    if not (written and readme.is_file() and (out / CARD_DATA).is_file()):
        return f"the model card {readme} was not written by this export (or predates {CARD_DATA}): not updated"
    if sha256_file(readme) != written:
        return f"the model card {readme} was edited since export wrote it: kept, not updated"
    card = read_json(out / CARD_DATA) | {"evaluation": evaluation}
    with atomic_path(readme) as tmp:
        tmp.write_text(model_card(read_json(out / "config.json"), read_json(out / SETTINGS_FILE), card), encoding="utf-8")
    rec["card"] = {"README.md": sha256_file(readme)}
    write_json(done, rec)
    return f"the evaluation is in the model card {readme}"


MAX_SHOTS_PER_SCENE = 256


def scene_settings(path: str | Path) -> dict:
    """An exported encoder's settings (``movies2scenes.json`` over ``config.json``) with the values
    ``m2s embed`` and browse use checked like the ``vit`` section: ``shots_per_scene`` an integer
    1..256 (the ``shots`` section is checked when it is applied as a config, see ``config.load``),
    or :class:`ModelFileError` naming the file."""
    path = Path(path)
    meta = read_model_config(path)
    n = meta.get("shots_per_scene")
    if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SHOTS_PER_SCENE):
        raise ModelFileError(f"{path / SETTINGS_FILE}: shots_per_scene must be an integer 1..{MAX_SHOTS_PER_SCENE}, "
                             f"got {json.dumps(n)[:40]}")
    k = meta.get("frames_per_shot", 1)
    if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 64):
        raise ModelFileError(f"{path / SETTINGS_FILE}: frames_per_shot must be an integer 1..64, got {json.dumps(k)[:40]}")
    if not isinstance(meta.get("shots") or {}, dict):
        raise ModelFileError(f"{path / SETTINGS_FILE}: shots must be a mapping of detect-shots settings")
    return meta


def load_scene_encoder(path: str | Path, device: str | torch.device = "cpu") -> SceneViT | FactorisedSceneEncoder:
    """The exported (or trained) scene encoder at ``path``, frozen and in eval mode: a
    :class:`SceneViT` (``arch`` joint) or a :class:`FactorisedSceneEncoder` (its backbone + temporal
    residual). Both take (B, n, k, 3, H, W) at ``encoder.input_size`` px and return (B, num_features)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_model_config(path)
    if meta.get("arch", "joint") == "factorised":
        if not (path / "model.safetensors").is_file():
            raise ModelFileError(f"{path}: a factorised scene encoder trained on imported shot features has no "
                                 f"pixel backbone (no model.safetensors); read its {TEMPORAL_FILE} with "
                                 "movies2scenes.models.factorised.load_temporal and feed it your (B, n, d) shot features")
        backbone = load_vit(path)
        temporal = load_temporal(path, meta.get("temporal"))
        return FactorisedSceneEncoder(backbone, temporal, int(meta["vit"]["img_size"])).to(device).eval()
    model = SceneViT(create_vit(checked_vit_config(path)))  # config checked against the weights first
    model.vit.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval().requires_grad_(False)


def load_export(path: str | Path, device: str | torch.device = "cpu") -> SceneViT | FactorisedSceneEncoder:
    """:func:`load_scene_encoder` for every consumer of a run's export (browse, search, embed,
    evaluate): where the folder holds the export stage's DONE.json, every file it recorded (weights,
    the temporal part, settings; not the card, which is for people) must still have its sha256, or a DamagedArtefact (exit 2)
    names the file and ``m2s export --verify``. A folder without a record (a copied encoder) loads
    as it is."""
    from movies2scenes.integrity import StageFiles, read_done
    from movies2scenes.layout import DONE

    path = Path(path)
    if (path / DONE).exists():
        StageFiles.of(path, read_done(path / DONE)).check_present()
    return load_scene_encoder(path, device)


def load_timm_backbone(path: str | Path):
    """The single-frame backbone through timm's own ``local-dir:`` loader (no movies2scenes code
    builds or loads it; the folder is checked first, see :func:`checked_vit_config`)."""
    import timm

    checked_vit_config(path)
    return timm.create_model(f"local-dir:{Path(path)}", pretrained=True).eval()
