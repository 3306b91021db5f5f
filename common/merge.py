"""The merge of raw values: defaults < YAML file < CLI flags, for one mode's option table.

:class:`RawValues` holds the merged, type-checked but not yet validated values, each with its
origin (``--max-sessions`` or ``sender.yaml: max_sessions``) so that errors name where a bad
value came from. Checks across keys and the building of frozen models live in
:mod:`tunnelpy.common.config`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunnelpy.common.errors import ConfigError
from tunnelpy.common.modes import Mode
from tunnelpy.common.option_spec import Kind, Option
from tunnelpy.common.options import RECEIVER_OPTIONS, SENDER_OPTIONS

# What a merged value of each kind must be, and how an error calls it. YAML gives any type,
# so even values the CLI already parsed are checked again here.
_KINDS: dict[Kind, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "path": ("a path", lambda v: isinstance(v, str)),
    "secret": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "list": ("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v)),
}


class RawValues:
    """Merged raw values with the origin of each (a flag or ``file: key``) for error messages.

    Driven in precedence order: built from the table's defaults, then
    :meth:`update_from_file`, then :meth:`update_from_cli`; read with :meth:`get`.
    """

    def __init__(self, options: tuple[Option, ...], mode: str) -> None:
        self._options = {o.key: o for o in options if mode in o.modes}
        self.values: dict[str, Any] = {k: o.default for k, o in self._options.items()}
        self.origin: dict[str, str] = {k: o.flag for k, o in self._options.items()}
        self.mode = mode

    def bounds(self, key: str) -> tuple[float, float]:
        bounds = self._options[key].bounds
        assert bounds is not None, f"option {key} has no bounds"
        return bounds

    def update_from_file(self, data: dict[str, Any], path: str, all_options: tuple[Option, ...]) -> None:
        known = {o.key: o for o in all_options}
        aliases = {alias: o.key for o in all_options for alias in o.key_aliases}
        for given, value in data.items():
            if given == "mode":
                continue
            key = aliases.get(given, given)
            if key != given and key in data:
                raise ConfigError(f"{path}: {given!r} and {key!r} are the same key; keep one")
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}")
            if key not in self._options:
                modes = ", ".join(o.modes_text() for o in all_options if o.key == key)
                raise ConfigError(f"{path}: key {key!r} does not apply to mode {self.mode!r} (only {modes})")
            if known[key].kind == "path" and isinstance(value, str):
                # A file names its neighbours: resolve against its folder, not the cwd.
                value = str(Path(path).parent / Path(value).expanduser())
            self.values[key] = value
            self.origin[key] = f"{path}: {given}"

    def update_from_cli(self, given: dict[str, Any]) -> None:
        # argparse gives None for every flag not on the command line (bools included), and
        # None must not override a value from the file.
        for key, value in given.items():
            if key in self._options and value is not None:
                self.values[key] = value
                self.origin[key] = self._options[key].flag

    def get(self, key: str) -> Any:
        """The checked value of ``key``; None if unset or not an option of this mode."""
        value = self.values.get(key)
        if value is None or key not in self._options:
            return None
        kind = self._options[key].kind
        if kind == "list" and self._options[key].scalar_ok and isinstance(value, str):
            value = [value] if value.strip() else []
        what, check = _KINDS[kind]
        if not check(value):
            raise ConfigError(f"{self.origin[key]}: expected {what}, got {value!r}")
        return tuple(value) if kind == "list" else value


def load_yaml(path: str) -> dict[str, Any]:
    """A YAML mapping; a duplicate key, bad syntax or another top level is a one-line error."""
    import yaml  # only senders read files; receivers start faster without it

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice (PyYAML keeps the last one silently)."""

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ConfigError(
                        f"--config {path}: line {key_node.start_mark.line + 1}: key {key!r} is given twice; keep one"
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from exc
    except yaml.MarkedYAMLError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise ConfigError(f"--config {path}: not valid YAML: {where}{exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: the top level must be a mapping of keys")
    return data


def merge_sender_values(mode: str | None, cli_values: dict[str, Any], config_path: str | None) -> RawValues:
    """Merge a sender's defaults < YAML file < CLI values; the mode comes from the command or the file."""
    return _merge(SENDER_OPTIONS, mode, cli_values, config_path)


def merge_receiver_values(mode: str | None, cli_values: dict[str, Any], config_path: str | None) -> RawValues:
    """Merge a receiver's defaults < YAML file < CLI values, like :func:`merge_sender_values`."""
    return _merge(RECEIVER_OPTIONS, mode, cli_values, config_path)


def _merge(
    options: tuple[Option, ...], mode: str | None, cli_values: dict[str, Any], config_path: str | None
) -> RawValues:
    data = load_yaml(config_path) if config_path else {}
    file_mode = data.get("mode")
    if file_mode is not None and file_mode not in tuple(Mode):
        raise ConfigError(f"{config_path}: mode {file_mode!r} is not one of {', '.join(Mode)}")
    if mode and file_mode and mode != file_mode:
        raise ConfigError(f"{config_path}: mode {file_mode!r} does not match the command's mode {mode!r}")
    mode = mode or file_mode
    if not mode:
        raise ConfigError(f"{config_path or 'config'}: no mode: set `mode: iroh` (or another mode)")
    raw = RawValues(options, mode)
    raw.update_from_file(data, config_path or "config", options)
    raw.update_from_cli(cli_values)
    return raw
