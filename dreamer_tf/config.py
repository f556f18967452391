"""One config tree: YAML ``defaults``, stackable presets and ``--a.b value`` overrides.

    config = load_config(["dmc_proprio", "size12m"], ["--run.steps", "1e5"])
    config.agent.dyn.deter        # 2048
    config.save(logdir / "config.yaml")

Preset keys are dotted paths (``run.train_ratio``) or regular expressions over
dotted paths (``.*\\.units`` sets every ``units`` in the tree). A key that
matches nothing is an error that names the key and the closest valid ones.
"""

from __future__ import annotations

import copy
import difflib
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

CONFIGS_PATH = Path(__file__).with_name("configs.yaml")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e5`` and ``4.0e-5`` as floats (PyYAML wants ``1.0e+5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config key or value a user can fix."""


class Config(Mapping):
    """An immutable nested mapping with attribute access.

    ``config.update({"run.steps": 10})`` returns a new config; the original is
    unchanged. Values keep the type of the default they replace (ints stay ints,
    ``1e5`` given for an int becomes ``100000``).
    """

    def __init__(self, data: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        tree = dict(data or {}, **kwargs)
        object.__setattr__(self, "_tree", {k: _wrap(v) for k, v in tree.items()})

    def __getitem__(self, key: str) -> Any:
        if "." in key:
            node: Any = self
            for part in key.split("."):
                node = node[part]
            return node
        return self._tree[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._tree[key]
        except KeyError:
            raise AttributeError(_unknown_key_message(key, list(self._tree))) from None

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (self.to_dict(),))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is immutable; use config.update({...}).")

    def __iter__(self) -> Iterator[str]:
        return iter(self._tree)

    def __len__(self) -> int:
        return len(self._tree)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and "." in key:
            try:
                self[key]
                return True
            except KeyError:
                return False
        return key in self._tree

    def __repr__(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self.to_dict() == other.to_dict()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(repr(self))

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self._tree.items()}

    def flat(self) -> dict[str, Any]:
        """All leaves as ``{"a.b.c": value}``."""
        out: dict[str, Any] = {}
        for key, value in self._tree.items():
            if isinstance(value, Config):
                out.update({f"{key}.{k}": v for k, v in value.flat().items()})
            else:
                out[key] = value
        return out

    def update(self, updates: Mapping[str, Any]) -> Config:
        """Return a copy with ``updates`` applied; keys are dotted paths or regexes."""
        flat = self.flat()
        result = dict(flat)
        for key, value in _flatten_updates(updates).items():
            matches = _match_keys(key, flat)
            if not matches:
                raise ConfigError(_unknown_key_message(key, list(flat)))
            for match in matches:
                result[match] = _convert(value, flat[match], match)
        return Config(_unflatten(result))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """A saved config; keys saved under an old name (``RENAMED``) come back under the new one."""
        flat = Config(yaml_load(Path(path).read_text())).flat()
        return cls(_unflatten(rename_keys(flat)))


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, Config):
        return Config(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _flatten_updates(updates: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts in presets, keeping regex keys intact as path parts."""
    out: dict[str, Any] = {}
    for key, value in updates.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten_updates(value, path))
        else:
            out[path] = value
    return out


def _match_keys(key: str, flat: Mapping[str, Any]) -> list[str]:
    if key in flat:
        return [key]
    # A key naming a subtree ("agent.opt") with a scalar value is not a leaf: no match.
    if any(ch in key for ch in "*+?[]()|\\^$"):
        pattern = re.compile(key + r"$")
        return [k for k in flat if pattern.match(k)]
    return []


def _convert(value: Any, default: Any, key: str) -> Any:
    """Cast ``value`` (maybe a string from the command line) to the type of ``default``."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = yaml_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"Cannot parse value {value!r} for '{key}': {error}") from None
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"'{key}' expects true or false, got {value!r}.")
    if isinstance(default, int):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return value
        raise ConfigError(f"'{key}' expects an integer, got {value!r}.")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"'{key}' expects a number, got {value!r}.")
    if isinstance(default, str):
        return str(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if default:
            return tuple(_convert(v, default[0], key) for v in value)
        return tuple(value)
    return value


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _unknown_key_message(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=5, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"Unknown config key '{key}'.{hint}"


def read_presets(path: str | Path = CONFIGS_PATH) -> dict[str, Any]:
    presets = yaml_load(Path(path).read_text())
    assert "defaults" in presets, f"{path} has no 'defaults' section"
    return presets


# Keys that moved: old name -> new name. Old run folders' config.yaml files and old flags still work.
RENAMED = {
    "jit": "compile.jit",
    "xla": "compile.xla",
    "precision": "compile.precision",
    "agent.unroll": "compile.unroll",
}


def rename_keys(flat: Mapping[str, Any], warn: bool = False) -> dict[str, Any]:
    """``flat`` (dotted keys) with the keys of ``RENAMED`` under their new names."""
    out = {}
    for key, value in flat.items():
        if key in RENAMED:
            if warn:
                print(f"note: --{key} is now --{RENAMED[key]}", file=sys.stderr)
            key = RENAMED[key]
        out[key] = value
    return out


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """Turn ``["--run.steps", "100", "--a.b=c"]`` into ``{"run.steps": "100", "a.b": "c"}``."""
    overrides: dict[str, str] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--"):
            raise ConfigError(f"Expected an option like --run.steps, got {token!r}.")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            index += 1
        else:
            if index + 1 >= len(argv):
                raise ConfigError(f"Option {token} needs a value.")
            key, value = token[2:], argv[index + 1]
            index += 2
        overrides[key] = value
    return rename_keys(overrides, warn=True)


def load_config(
    presets: list[str] | tuple[str, ...] = (),
    argv: list[str] | tuple[str, ...] = (),
    path: str | Path = CONFIGS_PATH,
) -> Config:
    """Defaults, then each named preset in order, then command-line overrides."""
    available = read_presets(path)
    config = Config(available["defaults"])
    for name in presets:
        if name not in available or name == "defaults":
            names = [k for k in available if k != "defaults"]
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(f"Unknown preset '{name}'.{hint} Presets: {', '.join(names)}.")
        config = config.update(available[name])
    if argv:
        config = config.update(parse_overrides(list(argv)))
    return config
