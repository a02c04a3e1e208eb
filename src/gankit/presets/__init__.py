"""Named, complete, reproducible recipes: the TOML files in this folder (see `gankit list presets`)."""
from __future__ import annotations

import dataclasses
from importlib import resources

from gankit import config as config_mod
from gankit.config import RunConfig
from gankit.errors import UserError
from gankit.registry import did_you_mean


def _files() -> dict[str, str]:
    folder = resources.files(__name__)
    return {f.name[:-5]: f.read_text(encoding="utf-8") for f in folder.iterdir() if f.name.endswith(".toml")}


def preset_names() -> list[str]:
    return sorted(_files())


def describe_presets() -> list[tuple[str, str]]:
    """(name, first comment line) for each preset."""
    out = []
    for name, text in sorted(_files().items()):
        first = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        out.append((name, first))
    return out


def load_preset(name: str) -> RunConfig:
    files = _files()
    if name not in files:
        raise UserError(f"unknown preset '{name}'{did_you_mean(name, list(files))}; "
                        f"valid: {', '.join(sorted(files))} (or a path to a .toml config file)")
    cfg = config_mod.loads(files[name], source=f"preset '{name}'")
    return dataclasses.replace(cfg, preset=name)
