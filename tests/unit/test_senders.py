"""Which sender a receiver asks next (worker/receiver/senders.py), and the config behind it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tunnelpy.common import config as cfg
from tunnelpy.common import options as opts
from tunnelpy.common.errors import ConfigError, ConnectFailed, ConnectionLost, ExitCode, SessionRefused
from tunnelpy.common.merge import RawValues, merge_receiver_values
from tunnelpy.worker.receiver.senders import SenderRotation, round_error

A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_a_round_asks_every_sender_once_in_order() -> None:
    rotation = SenderRotation([A, B, C])
    assert rotation.round() == (A, B, C)
    assert rotation.round() == (A, B, C)  # nobody connected yet: the same order again


def test_after_a_session_the_next_round_starts_with_the_next_sender() -> None:
    rotation = SenderRotation([A, B, C])
    rotation.connected(A)
    assert rotation.round() == (B, C, A)
    rotation.connected(C)
    assert rotation.round() == (A, B, C)


def test_one_sender_is_always_asked_again() -> None:
    rotation = SenderRotation([A])
    rotation.connected(A)
    assert rotation.round() == (A,)


def test_random_order_is_drawn_once_and_a_duplicate_is_asked_once() -> None:
    rotation = SenderRotation([A, B, C, A], "random", random.Random(7))
    assert sorted(rotation.order) == [A, B, C]
    assert rotation.round() == rotation.order
    orders = {SenderRotation([A, B, C], "random", random.Random(seed)).order for seed in range(40)}
    assert len(orders) > 1  # receivers spread over the senders


def test_a_round_of_refusals_ends_retryable_if_any_sender_may_take_us_later() -> None:
    unknown = SessionRefused("unknown receiver", ExitCode.UNAUTHORIZED)
    full = SessionRefused("full", ExitCode.AT_CAPACITY)
    gone = ConnectFailed("no answer")
    assert round_error([unknown, full, gone]) is gone
    assert round_error([full, unknown]) is full
    assert round_error([ConnectionLost("lost")]).exit_code == ExitCode.CONNECTION_LOST


def test_refused_by_every_sender_for_good_ends_with_the_first_reason() -> None:
    unknown = SessionRefused("unknown receiver", ExitCode.UNAUTHORIZED)
    outside = SessionRefused("not allowed", ExitCode.NOT_ALLOWED)
    assert round_error([unknown, outside]) is unknown


# -- config: --node-id repeatable, YAML one or a list, --node-order -------------------------------


def receiver(cli: dict) -> cfg.ReceiverConfig:  # type: ignore[type-arg]
    raw = RawValues(opts.RECEIVER_OPTIONS, "iroh")
    raw.update_from_cli({"source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222"} | cli)
    return cfg.build_receiver_config(raw)


def test_node_id_flags_keep_their_order() -> None:
    config = receiver({"node_id": [A, B], "node_order": "random"})
    assert config.node_ids == (A, B)
    assert config.node_order == "random"
    assert receiver({"node_id": [A]}).node_order == "order"


def test_node_order_must_be_order_or_random() -> None:
    with pytest.raises(ConfigError, match=r"^--node-order: 'shuffle' is not one of order, random$"):
        receiver({"node_id": [A], "node_order": "shuffle"})


def test_an_empty_sender_in_the_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="an empty sender"):
        receiver({"node_id": [A, " "]})


def test_no_relay_needs_every_sender_as_a_ticket() -> None:
    with pytest.raises(ConfigError, match="with --no-relay"):
        receiver({"node_id": ["endpointabc", B], "no_relay": True})


@pytest.mark.parametrize(("yaml_value", "expected"), [(A, (A,)), (f"[{A}, {B}]", (A, B))])
def test_yaml_node_id_is_one_or_a_list(tmp_path: Path, yaml_value: str, expected: tuple[str, ...]) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text(f"mode: iroh\nnode_id: {yaml_value}\nsource: tcp://127.0.0.1:22\nlisten: 127.0.0.1:2222\n")
    assert cfg.build_receiver_config(merge_receiver_values("iroh", {}, str(path))).node_ids == expected


def test_yaml_node_id_of_another_type_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text("mode: iroh\nnode_id: [1, 2]\nsource: tcp://127.0.0.1:22\nlisten: 127.0.0.1:2222\n")
    with pytest.raises(ConfigError, match=r"receiver.yaml: node_id: expected a list of strings"):
        cfg.build_receiver_config(merge_receiver_values("iroh", {}, str(path)))
