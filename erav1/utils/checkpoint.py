"""Atomic writes and safe loads for checkpoints, weights and run files.

A write goes to a temp file in the same folder, is fsynced, then renamed over
the target: a crash at any moment leaves either the old file or the new one,
never half of one.  Every load uses ``weights_only=True``, so a file can never
run code, and every failure becomes one :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from erav1.errors import CheckpointError

CHECKPOINT_FORMAT = "erav1-checkpoint-1"
# What a last.pt holds besides "format": everything fit() needs to continue a run.
TRAINING_STATE = ("epoch", "config", "classes", "model", "optimizer", "scheduler", "scaler", "rng", "history")
# How torch's weights_only unpickler names the callable it refused to import.
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _temp_name_parts(path: Path) -> tuple[str, str]:
    """Prefix and suffix of the temp file a write to ``path`` goes through."""
    return f".{path.name}.", ".tmp"


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temp_name_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make run files private
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def remove_partial_writes(folder: str | os.PathLike, names: tuple[str, ...]) -> None:
    """Delete the temp files that killed writes of ``names`` left in ``folder``.

    Finished files are never touched: a rename is the only way a temp file becomes one.
    """
    for name in names:
        prefix, suffix = _temp_name_parts(Path(folder) / name)
        for tmp in Path(folder).glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
            tmp.unlink(missing_ok=True)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file behind."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """``Path.write_text`` that never leaves a partial file behind."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """``shutil.copyfile`` that never leaves a partial file behind."""
    with open(source, "rb") as original:
        _atomic_write(Path(path), lambda f: shutil.copyfileobj(original, f))


def save_fp16_weights(state_dict: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Save ``state_dict`` with its floating-point tensors in fp16 (half the file); return the file's sha256.

    The model computes in fp32 again when it loads them; fp16 keeps about 3 significant digits of each weight.
    """
    half = {k: v.half() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in state_dict.items()}
    atomic_save(half, path)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one clear message per failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own advice would only repeat ours, at length
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged file can fail in many ways; each means the same to the user
        refused = _UNSAFE_GLOBAL.search(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if refused:
            raise CheckpointError(
                f"refused to load {path}: it would run {refused.group(1)} instead of only holding tensors "
                "and plain data. erav1 loads with weights_only=True and never runs code from a file; "
                "use only checkpoints from a source you trust"
            ) from None
        raise CheckpointError(
            f"{path} is corrupt, truncated or not a PyTorch checkpoint ({_describe_damage(path, exc)})"
        ) from None


def _describe_damage(path: Path, exc: Exception) -> str:
    """A few words on why torch could not read ``path``, without torch's page of advice."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(exc, pickle.UnpicklingError):
        return "its pickled data is unreadable"
    first_sentence = re.split(r"(?<=[.!?])\s", str(exc).strip(), maxsplit=1)[0]
    return f"{type(exc).__name__}: {first_sentence[:200]}" if first_sentence else type(exc).__name__


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A ``last.pt`` that ``fit`` can resume from, or one message saying what the file is instead."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        what = "a bare state_dict" if _is_state_dict(checkpoint) else f"a {type(checkpoint).__name__}"
        raise CheckpointError(
            f"{path} is not an erav1 training checkpoint (it holds {what}, not a {CHECKPOINT_FORMAT} record), "
            "so the run cannot resume from it"
        )
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(missing)}, so the run cannot resume from it")
    return checkpoint


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _num_classes(state_dict: dict[str, torch.Tensor]) -> int | None:
    """The classifier's output count: every erav1 model ends in a Linear layer, its last 2-d weight."""
    matrices = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return matrices[-1].shape[0] if matrices else None


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """``load_state_dict`` that names the file and says how its weights differ from the model."""
    if not _is_state_dict(state_dict):
        raise CheckpointError(f"{source} does not hold a model state_dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} holds weights for a different architecture than this {type(model).__name__} "
            f"({sum(v.numel() for v in model.parameters()):,} parameters): it lacks {len(missing)} of the "
            f"model's tensors{_examples(missing)} and has {len(unexpected)} the model does not know"
            f"{_examples(unexpected)}"
        )
    file_classes, model_classes = _num_classes(state_dict), _num_classes(expected)
    if file_classes != model_classes:
        raise CheckpointError(
            f"{source} holds weights for {file_classes} classes, but the model has {model_classes}: "
            "use data with the classes these weights were trained on"
        )
    reshaped = [k for k in expected if state_dict[k].shape != expected[k].shape]
    if reshaped:
        raise CheckpointError(f"{source} holds weights of other shapes than the model{_examples(reshaped)}")
    model.load_state_dict(state_dict)


def _examples(keys: list[str], n: int = 2) -> str:
    return f" (e.g. {', '.join(keys[:n])})" if keys else ""
