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
import math
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


def describe_yaml_error(error: Exception) -> str:
    """A one-line reason for a YAML (or decoding) error, with the line it happened at when known."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return (str(error).splitlines() or [type(error).__name__])[0]


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
        """A saved config; keys saved under an old name (``RENAMED``) come back under the new one.

        A file that is not YAML or not a mapping raises ``ConfigError`` naming the file.
        """
        try:
            data = yaml_load(Path(path).read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"{path} is not a readable config ({describe_yaml_error(error)}); fix or delete it."
            ) from None
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{path} is not a readable config (it holds a {type(data).__name__}, not a mapping of keys); "
                "fix or delete it."
            )
        flat = Config(data).flat()
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
        # A list for a text key is a comma list (``run.loggers: [jsonl, wandb]``).
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
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


class Range:
    """An allowed range for a number: ``Range(min=0, min_open=True)`` is ``> 0``.

    ``check(value)`` is True for values inside; NaN is never inside.
    """

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        min_open: bool = False,
        max_open: bool = False,
    ) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def check(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        if self.max is not None and (value >= self.max if self.max_open else value > self.max):
            return False
        return True

    def __str__(self) -> str:
        low = None if self.min is None else f"{'>' if self.min_open else '>='} {self.min:g}"
        high = None if self.max is None else f"{'<' if self.max_open else '<='} {self.max:g}"
        return " and ".join(part for part in (low, high) if part)


class Choice:
    """One of a fixed set of strings."""

    def __init__(self, *options: str) -> None:
        self.options = options

    def check(self, value: Any) -> bool:
        return value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(option or "''" for option in self.options)


class Names:
    """A comma-separated list (or a list) of names, each one of a fixed set."""

    def __init__(self, *options: str) -> None:
        self.options = options

    def check(self, value: Any) -> bool:
        items = value.split(",") if isinstance(value, str) else value
        names = [str(item).strip(" []'\"").lower() for item in items]  # "[a, b]" from the command line
        return all(name in self.options for name in names if name) and any(names)

    def __str__(self) -> str:
        return "a comma-separated list of " + ", ".join(self.options)


POSITIVE, AT_LEAST_ONE, NON_NEGATIVE = Range(0, min_open=True), Range(1), Range(0)
UNIT, UNIT_OPEN = Range(0, 1), Range(0, 1, max_open=True)

# Allowed values of the keys where a bad value breaks a run (a crash, a division by zero) or silently
# makes it meaningless (a negative learning rate, a run that never trains). Keys are dotted paths or
# regular expressions over them, as in presets. ``validate`` checks every leaf they match.
CONSTRAINTS: dict[str, Range | Choice | Names] = {
    "batch_size": AT_LEAST_ONE,
    "batch_length": AT_LEAST_ONE,
    "replay_context": NON_NEGATIVE,
    "compile.precision": Choice("auto", "float32", "bfloat16", "float16"),
    "compile.devices": NON_NEGATIVE,
    # '' renders nothing; rgb_array gives the frames episode videos record (other modes give none).
    "env.gym.render_mode": Choice("", "rgb_array"),
    "run.steps": POSITIVE,
    "run.train_ratio": POSITIVE,
    "run.envs": AT_LEAST_ONE,
    "run.parallel": Choice("auto", "none", "process"),
    "run.train_fill": NON_NEGATIVE,
    "run.eval_every": NON_NEGATIVE,
    "run.eval_eps": AT_LEAST_ONE,
    "run.eval_envs": AT_LEAST_ONE,
    "run.log_every": NON_NEGATIVE,
    "run.episode_timeout": POSITIVE,
    "run.max_bad_updates": AT_LEAST_ONE,
    "run.loggers": Names("jsonl", "tensorboard", "wandb", "mlflow"),
    "run.report_every": NON_NEGATIVE,
    "run.video_every": NON_NEGATIVE,
    # run.save_every: any number; a negative one turns periodic checkpoints off.
    "replay.size": AT_LEAST_ONE,
    "replay.chunk": AT_LEAST_ONE,
    "agent.loss_scales\\..*": NON_NEGATIVE,
    "agent.opt.optimizer": Choice("laprop", "adam"),
    "agent.opt.lr": POSITIVE,
    "agent.opt.agc": NON_NEGATIVE,
    "agent.opt.pmin": NON_NEGATIVE,
    "agent.opt.eps": NON_NEGATIVE,
    "agent.opt.beta1": UNIT_OPEN,
    "agent.opt.beta2": UNIT_OPEN,
    "agent.opt.warmup": NON_NEGATIVE,
    "agent.opt.actor": POSITIVE,
    "agent.dyn.(deter|hidden|stoch|classes|blocks)": AT_LEAST_ONE,
    "agent.dyn.(imglayers|obslayers|dynlayers)": AT_LEAST_ONE,
    "agent.dyn.free_nats": NON_NEGATIVE,
    "(agent|ppo)\\..*\\.unimix": UNIT_OPEN,
    "(agent|ppo)\\..*\\.(units|depth|kernel|bins)": AT_LEAST_ONE,
    "(agent|ppo)\\..*\\.layers": NON_NEGATIVE,
    "agent.(retnorm|valnorm|advnorm).impl": Choice("perc", "meanstd", "none"),
    "agent.(retnorm|valnorm|advnorm).rate": UNIT,
    "agent.imag_length": AT_LEAST_ONE,
    "agent.horizon": AT_LEAST_ONE,
    "agent.(imag_loss|repl_loss).lam": UNIT,
    "ppo.(rollout_length|epochs|minibatches)": AT_LEAST_ONE,
    "ppo.rollout_steps": NON_NEGATIVE,
    "ppo.net": Choice("dreamer", "impala"),
    "ppo.impala.blocks": NON_NEGATIVE,
    "ppo.discount": Range(0, 1, min_open=True),
    "ppo.lam": UNIT,
    "ppo.(clip|lr|max_grad_norm)": POSITIVE,
    "ppo.(eps|value_clip|value_coef|entropy_coef)": NON_NEGATIVE,
    "ppo.value_norm_rate": UNIT,
}


def validate(config: Config, constraints: Mapping[str, Range | Choice | Names] | None = None) -> None:
    """Raise ``ConfigError`` for the first value outside its range in ``CONSTRAINTS``.

    The message is one line naming the key, the value and the allowed range.
    """
    flat = config.flat()
    for pattern, allowed in (CONSTRAINTS if constraints is None else constraints).items():
        for key in _match_keys(pattern, flat):
            value = flat[key]
            values = value if isinstance(value, tuple) else (value,)
            if not all(allowed.check(v) for v in values):
                raise ConfigError(f"'{key}' is {value!r}, but it must be {allowed}.")


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
