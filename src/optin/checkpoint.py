"""Checkpoint folders: ``config.json`` + ``model.safetensors``, and resumable training state.

A checkpoint folder holds everything that rebuilds a model: its kind, architecture, feature
settings, label names, provenance and metrics in ``config.json``, and its tensors (parameters
and buffers such as batch-norm statistics) in ``model.safetensors``. ``config.json`` also records
the SHA-256 of the weights file, so a tampered or truncated file is refused, and weights holding NaN
or infinite values are refused too. ``format`` says which rules a folder was written under:
format 2 and later are sealed, so a missing ``config_sha256`` is refused; only format 1
(written before the seal) loads without one. Nothing is ever unpickled: tensors come from
safetensors, everything else from JSON. Files are written atomically (:mod:`optin.files`).

Training state (optimizer, scheduler, RNG, position in the epoch) is stored the same way under
``<run>/train_state/`` by :func:`save_state` / :func:`load_state`: nested dicts and lists go to
JSON with each tensor replaced by a reference into one safetensors file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from optin import __version__
from optin.audio.features import FeatureConfig
from optin.errors import ConfigError, OptinError
from optin.files import removed_on_failure, write_bytes, write_json
from optin.models.causal_obfuscator import CausalObfuscator, CausalObfuscatorConfig
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.models.decision_template import DecisionTemplateConfig, DecisionTemplateProtector
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
from optin.models.xvector import XVector, XVectorConfig
from optin.settings import StrictConfig

CONFIG_NAME = "config.json"
CONFIG_BUDGET = 16 * 2**20  # bytes of config.json read (VoxCeleb2's 6,000 speaker names: 0.1 MB)
WEIGHTS_NAME = "model.safetensors"
# {field: SHA-256 of its canonical JSON} for every other field of config.json (see seal_config)
CONFIG_HASHES = "config_sha256"
# fields a loader reads and their JSON types, checked in every checkpoint (even unsealed ones)
CONFIG_TYPES: dict[str, type] = {"kind": str, "architecture": dict, "features": dict,
                                 "labels": dict, "segments": dict, "weights_sha256": str}
FORMAT_VERSION = 2  # what save_checkpoint writes (config.json and model.safetensors' metadata)
SEALED_SINCE = 2  # format 1 was written before config_sha256 existed; every later one has it


class CheckpointError(OptinError, ValueError):
    """A checkpoint folder that cannot be used; the message names the folder and the field."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    directory: str | os.PathLike,
    state_dict: dict[str, Tensor],
    config: dict[str, Any],
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (atomically each).

    ``config`` must hold ``kind`` and ``architecture``; ``format``, ``code_version``,
    ``created`` and ``weights_sha256`` are added.
    """
    for key in ("kind", "architecture"):
        if key not in config:
            raise ValueError(f"checkpoint config needs '{key}'")
    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    # serialised in memory: a failed write then says why (no space...), naming the file
    write_bytes(weights, save(tensors, metadata={"format": str(FORMAT_VERSION)}))
    full = {
        "format": FORMAT_VERSION,  # always this one: the weights were just written in it
        **{k: v for k, v in config.items() if k != "format"},
        "code_version": __version__,
        "created": config.get("created") or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "weights_sha256": sha256_file(weights),
    }
    write_config(directory, full)
    return directory


def checkpoint_files(path: str | os.PathLike) -> list[Path]:
    """The files a model is read from, for :func:`optin.files.refuse_overwrite`: ``path``
    itself when it is not a folder, else every config.json and model.safetensors under it
    (links to folders not followed)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return [Path(root) / name for root, _, names in os.walk(path) for name in sorted(names)
            if name in (CONFIG_NAME, WEIGHTS_NAME)]


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed and checked ``config.json`` of a checkpoint folder (see
    :func:`check_config`)."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint folder does not exist")
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME} (not a checkpoint folder)")
    size = path.stat().st_size
    if size > CONFIG_BUDGET:
        raise CheckpointError(f"{path}: {size:,} bytes, over the {CONFIG_BUDGET:,} a "
                              "checkpoint's config.json may have; not a config optin wrote")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    except RecursionError as err:
        raise CheckpointError(f"{path}: nested too deeply to be a checkpoint's config") from err
    check_config(path, config)
    return config


def field_digest(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def seal_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``config_sha256``: the digest of every other field. The weights hash
    covers ``model.safetensors`` only; this covers ``config.json`` field by field, so an edit
    is refused naming the field."""
    body = {k: v for k, v in config.items() if k != CONFIG_HASHES}
    return {**body, CONFIG_HASHES: {k: field_digest(v) for k, v in body.items()}}


def write_config(directory: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write a checkpoint's ``config.json``, sealed; every (re)write goes through here."""
    write_json(Path(directory) / CONFIG_NAME, seal_config(config))


def check_config(path: Path, config: Any) -> None:
    """Refuse a ``config.json`` that is not a JSON object, that has no known ``format``, that
    was edited after it was written (a field whose digest differs from ``config_sha256``, a
    field added or removed, or the seal itself removed from a sealed format), or whose fields a
    loader reads have the wrong JSON type or invalid feature settings. Format 1 checkpoints,
    written before ``config_sha256`` existed, may lack it: they load with the type and feature
    checks only."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = format_version(path, config)
    sealed = config.get(CONFIG_HASHES)
    if sealed is None and version >= SEALED_SINCE:
        raise CheckpointError(f"{path}: field '{CONFIG_HASHES}' is missing, but format "
                              f"{version} checkpoints are sealed: it was removed after the "
                              "checkpoint was written; restore the file or retrain")
    if sealed is not None:
        check_seal(path, config, sealed)
    for key, kind in CONFIG_TYPES.items():
        if key in config and not isinstance(config[key], kind):
            raise CheckpointError(f"{path}: field '{key}': expected a JSON "
                                  f"{'object' if kind is dict else 'string'}, got "
                                  f"{config[key]!r}")
    if "features" in config:
        try:
            FeatureConfig.from_dict(config["features"])
        except ConfigError as err:
            raise CheckpointError(f"{path}: field 'features': {err}") from err


def format_version(path: Path, config: dict[str, Any]) -> int:
    """The ``format`` of a config.json: an integer from 1 to :data:`FORMAT_VERSION`.

    Raises:
        CheckpointError: missing, not an integer, or newer than this optin reads.
    """
    version = config.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: field 'format': expected a checkpoint format version "
                              f"(an integer from 1 to {FORMAT_VERSION}), got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {version} was written by a newer optin (this "
                              f"one reads formats 1 to {FORMAT_VERSION}); upgrade optin")
    return version


def check_seal(path: Path, config: dict[str, Any], sealed: Any) -> None:
    """Refuse a config whose fields do not match ``config_sha256``, naming the first field."""
    if not isinstance(sealed, dict):
        raise CheckpointError(f"{path}: field '{CONFIG_HASHES}': expected an object")
    body = {k: v for k, v in config.items() if k != CONFIG_HASHES}
    for key in sorted(set(body) | set(sealed)):
        if key not in sealed:
            change = "was added"
        elif key not in body:
            change = "was removed"
        elif field_digest(body[key]) != sealed[key]:
            change = "was changed"
        else:
            continue
        raise CheckpointError(f"{path}: field '{key}' {change} after the checkpoint was "
                              f"written (it does not match {CONFIG_HASHES}); restore the "
                              "file or retrain")


def check_weights_format(weights: Path, config_path: Path, version: int) -> None:
    """Refuse weights written in a later format than config.json claims (a sealed config
    relabelled as format 1 to pass without its seal)."""
    try:
        with safe_open(str(weights), "pt") as handle:
            stored = (handle.metadata() or {}).get("format", "1")
    except Exception as err:  # safetensors raises SafetensorError and others
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from err
    if not stored.isdigit() or int(stored) > version:
        raise CheckpointError(f"{config_path}: field 'format' says {version}, but {weights.name} "
                              f"was written as format {stored}: the config was edited; restore "
                              "the file or retrain")


def load_checkpoint(
    directory: str | os.PathLike,
    kind: str | None = None,
    features: FeatureConfig | None = None,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read and check a checkpoint folder.

    Args:
        kind: the expected ``kind`` (refused otherwise).
        features: the feature settings the caller will feed; refused if they differ.

    Returns:
        (config, state_dict) with tensors on the CPU.
    """
    directory = Path(directory)
    config = read_config(directory)
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(
            f"{directory}: is a '{config.get('kind')}' checkpoint, expected '{kind}'"
        )
    if features is not None:
        check_features(directory, config, features)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory}: missing {WEIGHTS_NAME}")
    expected = config.get("weights_sha256")
    if expected is None:
        raise CheckpointError(f"{directory / CONFIG_NAME}: no 'weights_sha256' field")
    actual = sha256_file(weights)
    if actual != expected:
        raise CheckpointError(
            f"{weights}: SHA-256 {actual[:12]}... does not match config.json's "
            f"weights_sha256 {expected[:12]}... (file changed or damaged)"
        )
    check_weights_format(weights, directory / CONFIG_NAME, config["format"])
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises SafetensorError and others
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from err
    check_finite(state, weights)
    return config, state


@dataclass(frozen=True)
class ModelKind:
    """What a checkpoint ``kind`` holds: the settings class of its ``architecture`` field and
    how to build the module from them (and from the whole config.json, for modules that also
    keep label names)."""

    name: str
    settings: type[StrictConfig]
    build: Callable[[Any, dict[str, Any]], torch.nn.Module]
    field: str = "architecture"
    outputs: str | None = None  # the settings field that counts the classes named in ``labels``
    class_word: str = "class"  # how an error names them


@dataclass
class LoadedModel:
    """A checkpoint read back: the module (in eval mode), its architecture settings, its
    config.json, its feature settings (None when it has none) and, for a kind with named
    classes, the attribute and the class names of ``labels``."""

    module: torch.nn.Module
    arch: Any
    config: dict[str, Any]
    features: FeatureConfig | None
    attribute: str | None = None
    classes: tuple[str, ...] = ()


# Every network of optin.models that is stored as a checkpoint, by its ``kind``. (ADR's kind,
# a module with label names, is optin.baselines.adr.ADR_KIND.)
MODEL_KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (
    ModelKind("deepspeech2-classifier", DeepSpeech2Config,
              lambda arch, config: DeepSpeech2Classifier(arch), outputs="n_classes"),
    ModelKind("cyclegan-vc2-obfuscator", GeneratorConfig, lambda arch, config: Generator(arch)),
    ModelKind("cyclegan-vc2-deobfuscator", GeneratorConfig,
              lambda arch, config: Generator(arch)),
    ModelKind("causal-obfuscator", CausalObfuscatorConfig,
              lambda arch, config: CausalObfuscator(arch)),
    ModelKind("decision-template", DecisionTemplateConfig,
              lambda arch, config: DecisionTemplateProtector(arch)),
    ModelKind("xvector", XVectorConfig, lambda arch, config: XVector(arch),
              outputs="n_speakers", class_word="speaker"),
)}


def load_model(directory: str | os.PathLike, kind: ModelKind | str,
               features: FeatureConfig | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load any checkpoint folder of ``kind`` (a :class:`ModelKind` or a name in
    :data:`MODEL_KINDS`): checked by :func:`load_checkpoint`, its settings rebuilt, its feature
    settings matched to the architecture's bins, its weights loaded strictly.

    Raises:
        CheckpointError: naming the folder and the field or tensors at fault.
    """
    directory = Path(directory)
    if isinstance(kind, str):
        if kind not in MODEL_KINDS:
            raise CheckpointError(f"unknown checkpoint kind '{kind}' (known: "
                                  f"{', '.join(MODEL_KINDS)})")
        kind = MODEL_KINDS[kind]
    config, state = load_checkpoint(directory, kind=kind.name, features=features)
    try:
        arch = kind.settings.from_dict(config[kind.field])
        feats = (FeatureConfig.from_dict(config["features"]) if "features" in config
                 else None)
        labels = config["labels"] if kind.outputs else {}
        attribute = labels.get("attribute")
        classes = tuple(str(c) for c in labels["classes"]) if kind.outputs else ()
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{directory / CONFIG_NAME}: bad or missing field ({err})"
                              ) from err
    if kind.outputs and getattr(arch, kind.outputs) != len(classes):
        raise CheckpointError(f"{directory}: {getattr(arch, kind.outputs)} outputs but "
                              f"{len(classes)} {kind.class_word} names")
    if feats is not None and hasattr(arch, "n_freq"):
        check_bins(directory, arch.n_freq, feats)
    module = built_to_fit(lambda: kind.build(arch, config), state, directory)
    load_module_state(module, state, directory)
    return LoadedModel(module.to(device).eval(), arch, config, feats,
                       None if attribute is None else str(attribute), classes)


def check_finite(state: dict[str, Tensor], where: Path) -> None:
    """Refuse tensors holding NaN or infinite values, naming the file and the tensor."""
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int(tensor.numel() - torch.isfinite(tensor).sum())
            if bad:
                raise CheckpointError(
                    f"{where}: tensor '{name}' holds {bad} NaN or infinite value(s) of "
                    f"{tensor.numel()}; the model is broken (retrain it or restore the file)"
                )


def check_bins(directory: Path, n_freq: int, features: FeatureConfig) -> None:
    """Refuse an architecture that reads another number of frequency bins than its features."""
    if n_freq != features.n_freq:
        raise CheckpointError(f"{directory}: architecture reads {n_freq} bins, the feature "
                              f"settings give {features.n_freq}")


def check_features(directory: Path, config: dict[str, Any], features: FeatureConfig) -> None:
    """Refuse a checkpoint whose feature settings differ from ``features``, naming the fields."""
    stored = config.get("features")
    if stored is None:
        raise CheckpointError(f"{directory / CONFIG_NAME}: no 'features' field")
    asked = features.to_dict()
    diff = [f"{k}: checkpoint {stored.get(k)!r}, asked {asked[k]!r}"
            for k in asked if stored.get(k) != asked[k]]
    extra = sorted(set(stored) - set(asked))
    if diff or extra:
        raise CheckpointError(
            f"{directory}: feature settings differ from the ones asked for ("
            + "; ".join(diff + [f"unknown field {k}" for k in extra]) + ")"
        )


def built_to_fit(build: Callable[[], torch.nn.Module], state: dict[str, Tensor],
                 where: Path) -> torch.nn.Module:
    """``build()``, first on the meta device (no memory) and compared with ``state``: an edited
    architecture (a hidden size of 10^12, NaN) is refused before any of it is allocated."""
    try:
        with torch.device("meta"):
            shell = build()
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{where / CONFIG_NAME}: the architecture cannot be built "
                              f"({str(err).splitlines()[0]})") from err
    check_state_fits(shell.state_dict(), state, where)
    return build()


def check_state_fits(own: dict[str, Tensor], state: dict[str, Tensor], where: Path) -> None:
    """Refuse weights whose names, shapes or dtypes are not the module's (``own``: its state
    dict), naming the folder and the first tensors at fault."""
    if wrong := sorted(k for k in set(own) & set(state) if own[k].dtype != state[k].dtype):
        raise CheckpointError(f"{where}: weights stored as " + ", ".join(
            f"{k} {str(state[k].dtype).removeprefix('torch.')}" for k in wrong[:3])
            + f"; the architecture holds {str(own[wrong[0]].dtype).removeprefix('torch.')} "
            "(not weights optin wrote; restore the file or retrain)")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]))
        raise CheckpointError(f"{where}: weights do not fit the architecture in config.json ("
                              + "; ".join(parts) + ")")


def load_module_state(module: torch.nn.Module, state: dict[str, Tensor], where: Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names the folder and the tensors
    (names, shapes and dtypes checked first)."""
    check_state_fits(module.state_dict(), state, where)
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------- training state
def _flatten(obj: Any, tensors: dict[str, Tensor], prefix: str) -> Any:
    if isinstance(obj, Tensor):
        key = prefix or "t"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors, f"{prefix}.k{i}"),
                              _flatten(v, tensors, f"{prefix}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, list | tuple):
        return {"__list__": [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in training state")


def _unflatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_state(directory: str | os.PathLike, state: dict[str, Any]) -> None:
    """Store a nested training state (tensors, numbers, strings, lists, dicts) safely.

    Written to a temporary folder, then swapped in, so a kill leaves the old or the new state.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tensors: dict[str, Tensor] = {}
    structure = _flatten(state, tensors, "s")
    with removed_on_failure(tmp, directory):
        tmp.mkdir(parents=True)
        write_bytes(tmp / "state.safetensors", save(tensors))
        write_json(tmp / "state.json", structure)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)


def load_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The state stored by :func:`save_state`, or None when there is none."""
    directory = Path(directory)
    if not (directory / "state.json").is_file():
        old = directory.with_name(directory.name + ".old")  # killed between the two renames
        if (old / "state.json").is_file():
            directory = old
        else:
            return None
    tensors = load_file(str(directory / "state.safetensors"))
    return _unflatten(json.loads((directory / "state.json").read_text()), tensors)
