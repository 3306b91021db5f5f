"""deploy/kubernetes: the StatefulSet, its ConfigMap, Service and PodDisruptionBudget.

Read, never applied (no cluster here): every document parses, the fields the deployment relies
on are there, the probes are real `tunnel-py status` commands, the ConfigMap's sender.yaml
loads through the real config loader, and the memory is sized from README "Measured".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.deploy_files import DEPLOY, load_sender_yaml, parse_command, yaml_documents

KUBE = DEPLOY / "kubernetes"

# README "Measured" (MB PSS): the supervisor; forkserver and the rest (1261 - 34 - 100 x 11.6);
# an idle worker at scale; what a worker adds while it transfers (iroh-manual 31.5 -> 43.4).
SUPERVISOR_MB, REST_MB, IDLE_WORKER_MB, BUSY_EXTRA_MB = 35, 67, 12, 12


def documents() -> dict[str, dict]:  # type: ignore[type-arg]
    found = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml_documents(path):
            assert doc.get("kind"), f"{path}: a document without kind"
            found[doc["kind"]] = doc
    return found


DOCS = documents()
STS = DOCS["StatefulSet"]
POD = STS["spec"]["template"]["spec"]
(SENDER,) = POD["containers"]
(INIT,) = POD["initContainers"]


def sender_yaml() -> str:
    return DOCS["ConfigMap"]["data"]["sender.yaml"]


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "Gi" else 1)


def test_every_manifest_is_in_the_kustomization() -> None:
    listed = set(DOCS["Kustomization"]["resources"])
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert {"Service", "StatefulSet", "ConfigMap", "PodDisruptionBudget"} <= set(DOCS)


def test_statefulset_is_governed_by_a_headless_service_and_selects_its_pods() -> None:
    service = DOCS["Service"]
    assert STS["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    labels = STS["spec"]["template"]["metadata"]["labels"]
    assert STS["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert STS["spec"]["replicas"] >= 2  # something to fail over to


def test_pod_disruption_budget_covers_the_senders() -> None:
    pdb = DOCS["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= STS["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable")


def test_configmap_sender_yaml_loads_and_drains_within_the_grace_period(tmp_path: Path) -> None:
    config, _ = load_sender_yaml(sender_yaml(), tmp_path)
    assert config.mode == "iroh" and config.authorized_keys
    assert POD["terminationGracePeriodSeconds"] > config.drain_grace


def test_each_pod_copies_its_own_identity_where_sender_yaml_reads_it(tmp_path: Path) -> None:
    _, keys = load_sender_yaml(sender_yaml(), tmp_path)
    script = INIT["command"][-1]
    assert '"/identity/$POD_NAME.key"' in script  # one Secret entry per pod, named after it
    assert f"install -m 0600 \"/identity/$POD_NAME.key\" {keys['secret_file']}" in script
    assert keys["authorized_keys"] in script
    (env,) = INIT["env"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    volumes = {v["name"]: v for v in POD["volumes"]}
    assert volumes["identity"]["secret"]["defaultMode"] == 0o440  # readable through fsGroup, copied to 0600
    assert POD["securityContext"]["fsGroup"] == POD["securityContext"]["runAsGroup"]
    run_mount = {m["name"]: m["mountPath"] for m in INIT["volumeMounts"]}["run"]
    assert keys["secret_file"].startswith(run_mount + "/")
    assert {m["name"]: m["mountPath"] for m in SENDER["volumeMounts"]}["run"] == run_mount


def test_sender_runs_its_config_as_non_root_read_only() -> None:
    args = parse_command(SENDER["args"])
    assert args.config == "/config/sender.yaml"
    assert {m["mountPath"]: m["name"] for m in SENDER["volumeMounts"]}["/config"] == "config"
    for container in (SENDER, INIT):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
        assert context["capabilities"]["drop"] == ["ALL"]
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert "/tmp" in {m["mountPath"] for m in SENDER["volumeMounts"]}  # the run folder, root fs read-only


@pytest.mark.parametrize(("probe", "expected"), [("readinessProbe", "ready"), ("livenessProbe", "alive"),
                                                 ("startupProbe", "alive")])
def test_probes_are_tunnel_py_status_checks(probe: str, expected: str) -> None:
    command = SENDER[probe]["exec"]["command"]
    assert parse_command(command).probe == expected
    assert SENDER[probe]["timeoutSeconds"] > 3  # `tunnel-py status` gives up after 3 s


def test_memory_is_sized_from_the_measured_figures(tmp_path: Path) -> None:
    config, _ = load_sender_yaml(sender_yaml(), tmp_path)
    resources = SENDER["resources"]
    base = SUPERVISOR_MB + REST_MB
    request = base + config.max_sessions * IDLE_WORKER_MB
    limit = base + config.max_sessions * (IDLE_WORKER_MB + BUSY_EXTRA_MB)
    assert request * 0.95 <= mebibytes(resources["requests"]["memory"]) <= request * 1.25
    assert limit * 0.95 <= mebibytes(resources["limits"]["memory"]) <= limit * 1.25
    assert resources["requests"]["cpu"]
