"""Weight files read without building anything: a safetensors header's tensor names and shapes,
their differences from what a model expects, and the error that names the file and the reason."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError


class ModelFileError(ConfigError):
    """A saved model folder whose config.json or weights cannot be used; names the file and why."""


def weight_shapes(file: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise ModelFileError(f"{file}: not found") from None
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise ModelFileError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def shape_mismatches(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> list[str]:
    """Human-readable differences between two name → shape maps (empty when they agree)."""
    out = [f"missing {k} {v}" for k, v in expected.items() if k not in found]
    out += [f"unexpected {k} {v}" for k, v in found.items() if k not in expected]
    out += [f"{k}: config gives {v}, file has {found[k]}" for k, v in expected.items()
            if k in found and tuple(found[k]) != tuple(v)]
    return out
