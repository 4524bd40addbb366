"""Setting values checked as their flags would be, wherever they come from (a flag, a YAML/JSON config file, a
recipe): the dataclass field's type, choices (a `Literal` or `choices=`) and bounds (`at_least=`, `at_most=`,
`above=`, `below=` in its metadata) decide, with no silent coercion. Also reads such a file of settings."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Literal

import yaml

from .errors import SettingsError

BOUNDS = {"at_least": (lambda value, bound: value >= bound), "at_most": (lambda value, bound: value <= bound),
          "above": (lambda value, bound: value > bound), "below": (lambda value, bound: value < bound)}


def require_finite(value: float, where: str) -> None:
    """NaN compares false, so no bound catches it: a float setting must be finite."""
    if not math.isfinite(value):
        raise SettingsError(f"{where} is {value}; pass a finite number")


class SettingChecks:
    """The checks of one settings dataclass: `fields` by name, `types` (without "| None"), `keys` (every
    config-file key, the names and their `aliases` metadata without "--", -> its field's name)."""

    def __init__(self, settings_class):
        self.fields = {field.name: field for field in dataclasses.fields(settings_class)}
        self.types = {name: typing.get_args(kind)[0] if type(None) in typing.get_args(kind) else kind
                      for name, kind in typing.get_type_hints(settings_class).items() if name in self.fields}
        self.keys = {**{alias[2:]: name for name, field in self.fields.items()
                        for alias in field.metadata.get("aliases", ())}, **{name: name for name in self.fields}}

    def check(self, name: str, value, where: str):
        """`value` as its field's type would parse it from a flag, within its choices and bounds."""
        field, base = self.fields[name], self.types[name]
        if value is None and field.default is None:  # null means "not set", as omitting it
            return None
        choices = typing.get_args(base) if typing.get_origin(base) is Literal else field.metadata.get("choices")
        if choices:
            if set(choices) == {"auto", "true", "false"} and isinstance(value, bool):
                value = str(value).lower()
            if value not in choices:
                raise SettingsError(f"{where} {value!r} is not a choice: {', '.join(choices)}")
            return value
        if isinstance(value, bool) != (base is bool) or not isinstance(value, (int, float) if base is float else base):
            expected = {bool: "true or false (unquoted)", int: "an integer", float: "a number", str: "a string"}[base]
            raise SettingsError(f"{where} must be {expected}, got {value!r} ({type(value).__name__})")
        if base is float:
            require_finite(value, where)
        for key, holds in BOUNDS.items():
            if key in field.metadata and not holds(value, field.metadata[key]):
                raise SettingsError(f"{where} must be {key.replace('_', ' ')} {field.metadata[key]} (got {value})")
        return float(value) if base is float else value

    def load_file(self, path) -> dict:
        """{field name: (value, where)} of a YAML/JSON file of settings, each value checked as its flag's would be."""
        file = Path(path)
        if not file.is_file():
            raise SettingsError(f"--config_file {path} does not exist")
        kind = "JSON" if file.suffix == ".json" else "YAML"
        try:
            values = (json.loads(file.read_text()) if kind == "JSON" else yaml.safe_load(file.read_text())) or {}
        except (yaml.YAMLError, json.JSONDecodeError) as error:
            raise SettingsError(f"--config_file {path} is not valid {kind}: {' '.join(str(error).split())}") from None
        if not isinstance(values, dict):
            raise SettingsError(f"--config_file {path} must hold a mapping of setting: value, got "
                                f"{type(values).__name__}")
        unknown = sorted(str(key) for key in values if key not in self.keys)
        if unknown:
            raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}; see run_pretrain.py --help")
        checked = {}
        for key, value in values.items():
            name, where = self.keys[key], f"{path}: {key}"
            if name in checked:
                raise SettingsError(f"{where} and {checked[name][1].split(': ')[-1]} are the same setting; keep one")
            checked[name] = (self.check(name, value, where), where)
        return checked
