"""deploy/: systemd units, the container image and compose file, example configs.

Every manifest parses; the fields the deployment relies on are there; every tunnel-py command
in them parses with the real CLI parser; the configs load through the real config loader;
the units pass `systemd-analyze verify` (and an offline security review) where systemd is
installed. No container engine runs here: the Containerfile is read, never built.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.unit.deploy_files import (
    DEPLOY,
    REPO,
    containerfile,
    exec_form,
    load_sender_yaml,
    one,
    parse_command,
    private_copy,
    shell_words,
    unit_file,
    values,
    yaml_documents,
)
from tunnelpy.common import config as cfg
from tunnelpy.common.allowlist import parse_source
from tunnelpy.common.merge import merge_receiver_values
from tunnelpy.common.options import default_of

SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
CONTAINER = DEPLOY / "container"
README = (REPO / "README.md").read_text(encoding="utf-8")


def deploy_section() -> str:
    """README's "## Deploy", up to the next top-level section."""
    start = README.index("\n## Deploy\n")
    return README[start : README.index("\n## ", start + 1)]


def test_every_yaml_manifest_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert yaml_documents(path), f"{path} is empty"


# -- systemd -------------------------------------------------------------------------------------


def exec_start(path: Path) -> list[str]:
    """ExecStart= as argv, with the specifiers a real start would fill in."""
    line = one(unit_file(path), "Service", "ExecStart")
    return shell_words(line.replace("%d", "/run/credentials/unit").replace("%i", "eu"))


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_the_three_units_exist() -> None:
    names = ["tunnel-receiver@.service", "tunnel-supervisor.service", "tunnel-supervisor@.service"]
    assert [p.name for p in UNITS] == names


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_are_hardened(path: Path) -> None:
    unit = unit_file(path)
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",  # empty: no capability at all
        "Restart": "on-failure",
    }
    for key, value in expected.items():
        assert one(unit, "Service", key) == value, key
    assert not values(unit, "Service", "ExecReload"), "the supervisor has no reload: no ExecReload="
    assert "2" in one(unit, "Service", "RestartPreventExitStatus").split()  # a config error is not retried


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_exec_start_parses_and_its_credentials_are_loaded(path: Path) -> None:
    argv = exec_start(path)
    args = parse_command(argv)
    assert args.config and args.config.startswith("/etc/tunnel-py/")
    credentials = {v.split(":", 1)[0] for v in values(unit_file(path), "Service", "LoadCredential")}
    used = {a.removeprefix("/run/credentials/unit/") for a in argv if a.startswith("/run/credentials/unit/")}
    assert used and used == credentials, "every %d/NAME in ExecStart= comes from a LoadCredential=, and back"
    flags = {"--secret-file"} | ({"--authorized-keys"} if "supervisor" in path.name else set())
    assert all((flag_value(argv, flag) or "").startswith("/run/credentials/unit/") for flag in flags)


@pytest.mark.parametrize("name", ["tunnel-supervisor.service", "tunnel-supervisor@.service"])
def test_sender_units_drain_within_their_stop_timeout(name: str) -> None:
    unit = unit_file(SYSTEMD / name)
    assert float(one(unit, "Service", "TimeoutStopSec")) > default_of("drain_grace")
    assert one(unit, "Service", "KillMode") == "mixed"  # SIGTERM to the supervisor only: it drains its workers
    assert int(one(unit, "Unit", "StartLimitBurst")) >= 1 and int(one(unit, "Unit", "StartLimitIntervalSec")) > 0
    argv = exec_start(SYSTEMD / name)
    control = Path(flag_value(argv, "--control") or "")
    runtime = one(unit, "Service", "RuntimeDirectory").replace("%i", "eu")
    assert control.parent == Path("/run") / runtime, "the control socket lives in the unit's RuntimeDirectory="
    assert one(unit, "Service", "RuntimeDirectoryMode") == "0700"


def test_the_template_keeps_instances_apart() -> None:
    unit = unit_file(SYSTEMD / "tunnel-supervisor@.service")
    assert "%i" in one(unit, "Service", "User")
    assert all("%i" in v for v in values(unit, "Service", "LoadCredential"))
    assert "%i" in one(unit, "Service", "ExecStart")


def systemd_root(tmp_path: Path) -> Path:
    """A root for `systemd-analyze --root`: our units, the host's stock units, stub binaries."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for path in UNITS:
        shutil.copy(path, root / "etc/systemd/system" / path.name)
        stub = root / exec_start(path)[0].lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    return root


INSTANCES = ["tunnel-supervisor.service", "tunnel-supervisor@eu.service", "tunnel-receiver@ssh.service"]
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not Path("/lib/systemd/system").is_dir(),
    reason="systemd-analyze is not installed (Debian package systemd; scripts/setup-test-env installs it)",
)


@needs_systemd
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    root = systemd_root(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *INSTANCES], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for an unknown key or a bad value: it only warns, so nothing may be printed
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_systemd
@pytest.mark.parametrize("instance", INSTANCES)
def test_units_security_review_is_ok(tmp_path: Path, instance: str) -> None:
    root = systemd_root(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--threshold=20", instance],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr  # exposure at most 2.0 ("OK")


# -- the container image and compose -----------------------------------------------------------


def instructions() -> list:  # type: ignore[type-arg]
    return containerfile(CONTAINER / "Containerfile")


def test_containerfile_builds_in_a_rust_stage_and_runs_as_non_root() -> None:
    found = instructions()
    stages = [i for i in found if i.keyword == "FROM"]
    assert len(stages) == 2 and stages[0].text.split()[-2:][0].upper() == "AS"
    assert "rust" in stages[0].text  # cargo and rustc for the native crate (setuptools-rust)
    build_runs = " ".join(i.text for i in found if i.stage == 0 and i.keyword == "RUN")
    assert "pip install --no-cache-dir ." in build_runs
    runtime = [i for i in found if i.stage == 1]
    assert any(i.keyword == "COPY" and i.text.startswith("--from=build") for i in runtime)
    (user,) = [i.text for i in runtime if i.keyword == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0  # numeric: runAsNonRoot can check it


def test_containerfile_copies_every_package_folder() -> None:
    """A folder added to the package (pyproject's package-dir) must reach the build stage."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = {i.text.split()[0] for i in instructions() if i.stage == 0 and i.keyword == "COPY"}
    assert folders <= copied, f"not copied into the build stage: {sorted(folders - copied)}"
    assert (REPO / "worker").is_dir()  # the native crate, worker/native, comes with worker/


def container_commands() -> dict[str, list[str]]:
    found = {i.keyword: i.text for i in instructions() if i.stage == 1}
    health = found["HEALTHCHECK"]
    return {
        "ENTRYPOINT": exec_form(found["ENTRYPOINT"]),
        "CMD": exec_form(found["CMD"]),
        "HEALTHCHECK": exec_form(health[health.index(" CMD ") + 5 :]),
    }


def test_container_commands_parse_and_are_the_documented_ones() -> None:
    commands = container_commands()
    assert commands["ENTRYPOINT"][0].endswith("tini")
    assert parse_command(commands["CMD"]).config == "/etc/tunnel-py/sender.yaml"
    assert parse_command(commands["HEALTHCHECK"]).probe == "ready"
    deploy = deploy_section()
    prose = " ".join(deploy.split())  # a command may wrap across lines in the README
    for name in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
        shown = " ".join(commands[name])
        assert shown in prose or json_text(commands[name]) in prose, f"README's Deploy section lacks the {name} command"
    build = [line.strip("# ").strip() for line in (CONTAINER / "Containerfile").read_text().splitlines()[:4]]
    documented = [line for line in build if line.startswith(("docker build", "podman build"))]
    assert documented and all(line in deploy for line in documented)


def json_text(argv: list[str]) -> str:
    return "[" + ", ".join(f'"{a}"' for a in argv) + "]"


def compose() -> dict:  # type: ignore[type-arg]
    (doc,) = yaml_documents(CONTAINER / "compose.yaml")
    return doc


def mounts(service: dict) -> dict[str, str]:  # type: ignore[type-arg]
    """target -> source of a compose service's volumes (short syntax)."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_compose_runs_the_sender_on_its_config_and_identity(tmp_path: Path) -> None:
    services = compose()["services"]
    assert {"sender", "web", "identity"} <= set(services)
    sender = services["sender"]
    args = parse_command(sender["command"])
    sender_mounts = mounts(sender)
    assert (CONTAINER / sender_mounts[args.config]).is_file()
    config, keys = load_sender_yaml((CONTAINER / sender_mounts[args.config]).read_text(), tmp_path)
    assert (CONTAINER / sender_mounts[keys["authorized_keys"]]).is_file()
    assert str(Path(keys["secret_file"]).parent) in sender_mounts  # the identity volume
    keygen = services["identity"]["command"][-1]
    assert f"tunnel-py generate-iroh-key -o {keys['secret_file']}" in keygen
    assert parse_command(shell_words(keygen.split("|| ")[1])).output == keys["secret_file"]
    web = services["web"]["networks"]["tunnel"]["ipv4_address"]
    port = services["web"]["command"][3]
    assert config.allowed.check(parse_source(f"tcp://web:{port}"), [web]) == (web,)  # receivers may ask for it
    grace = float(sender["stop_grace_period"].rstrip("s"))
    assert grace > config.drain_grace
    build = services["identity"]["build"]
    assert (CONTAINER / build["context"] / build["dockerfile"]).resolve() == (CONTAINER / "Containerfile").resolve()
    assert sender["read_only"] is True and sender["cap_drop"] == ["ALL"]


# -- example configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sender.yaml", "sender-nostr.yaml"])
def test_example_sender_configs_load(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    overrides = {"nsec_file": private_copy(tmp_path, "sender.nsec", "ab" * 32)} if "nostr" in name else {}
    config = cfg.sender_config_from(None, overrides, str(DEPLOY / "examples" / name))
    assert config.allowed.tcp or config.allowed.udp


def test_example_receiver_config_loads_with_its_senders() -> None:
    config = cfg.build_receiver_config(merge_receiver_values("iroh", {}, str(DEPLOY / "examples" / "receiver.yaml")))
    assert len(config.node_ids) == 2 and config.node_order == "random"
    assert str(config.source) == "tcp://127.0.0.1:22"


# -- README --------------------------------------------------------------------------------------


def test_readme_deploy_section_names_every_deploy_file() -> None:
    deploy = deploy_section()
    assert "### Running many senders" in deploy
    files = [p.relative_to(REPO) for p in DEPLOY.rglob("*") if p.is_file() and "examples" not in p.parts]
    missing = [str(f) for f in files if str(f) not in deploy and f.name not in deploy]
    assert not missing, f"README's Deploy section does not mention {missing}"
