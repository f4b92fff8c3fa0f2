"""Weight files read without building anything: a safetensors header's tensor names and shapes,
their differences from what a model expects, and the error that names the file and the reason."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


class ModelFileError(ConfigError):
    """A saved model folder whose config.json or weights cannot be used; names the file and why."""


def weight_shapes(file: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            shapes = {k: tuple(s.get_shape()) for k, s in slices.items()}
            dtypes = {k: s.get_dtype() for k, s in slices.items()}
    except FileNotFoundError:
        raise ModelFileError(f"{file}: not found") from None
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise ModelFileError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    odd = {k: d for k, d in dtypes.items() if d not in FLOAT_DTYPES and not k.endswith("num_batches_tracked")}
    if odd:
        name = min(odd)
        raise ModelFileError(f"{file}: tensor {name} is {odd[name]} ({len(odd)} tensor(s) not floating point); "
                             "movies2scenes saves and loads F32/F16/BF16 weights (a quantised file is not an export "
                             "it can run)")
    return shapes


FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}  # besides, BatchNorm's integer step counters (num_batches_tracked)


def shape_mismatches(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> list[str]:
    """Human-readable differences between two name → shape maps (empty when they agree)."""
    out = [f"missing {k} {v}" for k, v in expected.items() if k not in found]
    out += [f"unexpected {k} {v}" for k, v in found.items() if k not in expected]
    out += [f"{k}: config gives {v}, file has {found[k]}" for k, v in expected.items()
            if k in found and tuple(found[k]) != tuple(v)]
    return out
