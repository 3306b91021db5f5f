"""Readers for the files in deploy/ that the deploy tests check: unit files, the Containerfile,
commands in them, and the example configs loaded through the real config loader."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunnelpy.cli.main import build_parser, build_supervisor_parser
from tunnelpy.common import config as cfg

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def yaml_documents(path: Path) -> list[Any]:
    """Every document of a (multi-document) YAML file, parsed safely."""
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]} (keys may repeat; ``\\`` continues a line)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= given {len(found)} times"
    return found[0]


@dataclass(frozen=True)
class Instruction:
    stage: int  # 0 = the first FROM
    keyword: str
    text: str


def containerfile(path: Path) -> list[Instruction]:
    """The instructions of a Containerfile, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    stage, pending = -1, ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        line = pending + stripped
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        keyword, _, text = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        result.append(Instruction(stage, keyword.upper(), text.strip()))
    return result


def exec_form(text: str) -> list[str]:
    """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD."""
    argv = json.loads(text)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
    return argv


def parse_command(argv: list[str]) -> Any:
    """Parse a tunnel-py or tunnel-supervisor command line with the real CLI parser."""
    program = Path(argv[0]).name
    if program == "tunnel-py":
        return build_parser(bench_options=False).parse_args(argv[1:])
    if program == "tunnel-supervisor":
        return build_supervisor_parser().parse_args(argv[1:])
    raise AssertionError(f"not a tunnel-py command: {argv}")


def shell_words(command: str) -> list[str]:
    return shlex.split(command)


def private_copy(tmp_path: Path, name: str, text: str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDE=\n") -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def load_sender_yaml(text: str, tmp_path: Path) -> tuple[cfg.SenderConfig, dict[str, Any]]:
    """Load a deployed sender.yaml through the real loader. The files it names exist only in
    the deployment (a container, a pod), so they are given as flags pointing at stand-ins,
    as an operator would override them; returns the config and the file's own keys."""
    path = tmp_path / "sender.yaml"
    path.write_text(text)
    keys = yaml.safe_load(text)
    overrides: dict[str, Any] = {}
    if "secret_file" in keys:
        overrides["secret_file"] = private_copy(tmp_path, "sender.key")
    if "authorized_keys" in keys:
        overrides["authorized_keys"] = str(DEPLOY / "examples" / "authorized_keys")
    return cfg.sender_config_from(None, overrides, str(path)), keys
