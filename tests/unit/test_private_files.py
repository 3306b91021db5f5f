"""Secret files and private folders (common/private_files.py): each way it can go wrong is refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tunnelpy.common.errors import ConfigError
from tunnelpy.common.private_files import (
    RUNDIR_PREFIX,
    acl_private,
    make_rundir,
    private_dir,
    read_secret,
    read_trusted,
    remove_stale_rundirs,
    write_private,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_write_private_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "sub" / "key", "secret\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "sub" / "key") == 0o600
    assert (tmp_path / "sub" / "key").read_text() == "secret\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["key"]  # no temp file left


def test_write_private_ignores_a_planted_tmp_file_and_symlink(tmp_path: Path) -> None:
    target = tmp_path / "key"
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "key.tmp").symlink_to(victim)  # the old fixed temp name, planted
    os.symlink(victim, tmp_path / "key")  # the target itself a link: replaced, never followed
    write_private(target, "secret")
    assert victim.read_text() == "untouched"
    assert not target.is_symlink() and mode(target) == 0o600 and target.read_text() == "secret"


def test_write_private_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "key").mkdir()  # a folder in the way: the rename fails
    with pytest.raises(OSError):
        write_private(tmp_path / "key", "secret")
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o660, 0o666])
def test_read_secret_refuses_a_file_others_can_read(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "key"
    path.write_text("secret")
    path.chmod(bits)
    with pytest.raises(ConfigError, match=rf"--secret-file {path}: mode 0{bits:o} lets others read it; run `chmod 600"):
        read_secret(path, "--secret-file")


def test_read_secret_reads_a_private_file_stripped(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_private(path, "  secret \n\n")
    assert read_secret(path, "--secret-file") == "secret"


def test_read_secret_refuses_empty_symlink_and_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write_private(empty, "\n")
    with pytest.raises(ConfigError, match="the file is empty; make one"):
        read_secret(empty, "--secret-file", "make one")
    link = tmp_path / "link"
    link.symlink_to(empty)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        read_secret(link, "--secret-file")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret(tmp_path, "--secret-file")
    with pytest.raises(ConfigError, match=r"cannot read \(No such file or directory\); make one"):
        read_secret(tmp_path / "absent", "--secret-file", "make one")


def test_read_trusted_allows_readable_refuses_writable(tmp_path: Path) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text("k\n")
    path.chmod(0o644)
    assert read_trusted(path, "--authorized-keys") == "k\n"
    for bits in (0o664, 0o646, 0o666):
        path.chmod(bits)
        with pytest.raises(ConfigError, match="lets others change who may connect"):
            read_trusted(path, "--authorized-keys")


def test_private_dir_creates_0700_and_checks_an_existing_one(tmp_path: Path) -> None:
    created = private_dir(tmp_path / "a" / "b", "--control")
    assert mode(created) == 0o700
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    with pytest.raises(ConfigError, match="the folder is open to others"):
        private_dir(tmp_path / "open", "--control")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        private_dir(tmp_path / "file", "--control")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown")
def test_private_dir_refuses_a_folder_someone_else_owns(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, -1)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        private_dir(foreign, "--control")


def test_stale_rundirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{RUNDIR_PREFIX}{int(dead.stdout)}-abc"
    stale.mkdir(mode=0o700)
    (stale / "workers.sock").write_text("")
    live = tmp_path / f"{RUNDIR_PREFIX}{os.getpid()}-def"
    live.mkdir(mode=0o700)
    unrelated = tmp_path / "tunnel-py-other"
    unrelated.mkdir()
    assert remove_stale_rundirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_make_rundir_is_private_and_named_by_pid() -> None:
    rundir = make_rundir()
    try:
        assert rundir.name.startswith(f"{RUNDIR_PREFIX}{os.getpid()}-") and mode(rundir) == 0o700
    finally:
        rundir.rmdir()


def test_a_named_folder_may_be_readable_but_not_writable_by_others(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o755)
    assert private_dir(folder, "--control", readable=True) == folder
    folder.chmod(0o775)
    with pytest.raises(ConfigError, match="the folder is open to others"):
        private_dir(folder, "--control", readable=True)


# -- systemd credentials: 0400 root's plus an ACL entry for the service's user ----------------


def acl_blob(*entries: tuple[int, int, int]) -> bytes:
    """A ``system.posix_acl_access`` value: version 2, then (tag, permission, id) entries."""
    body = b"".join(
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + ident.to_bytes(4, "little")
        for tag, perm, ident in entries
    )
    return (2).to_bytes(4, "little") + body


USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NOBODY = 0xFFFFFFFF  # the "no id" of the owner/group/other/mask entries


def credential_acl(uid: int, *, group: int = 0, other: int = 0, named_group: int | None = None) -> bytes:
    """What systemd's write_credential leaves: owner r, the service user r, mask r."""
    entries = [(USER_OBJ, 4, NOBODY), (USER, 4, uid), (GROUP_OBJ, group, NOBODY)]
    if named_group is not None:
        entries.append((GROUP, 4, named_group))
    return acl_blob(*entries, (MASK, 4, NOBODY), (OTHER, other, NOBODY))


def test_an_acl_for_us_alone_is_private() -> None:
    assert acl_private(credential_acl(1234), 1234)


@pytest.mark.parametrize(
    "blob",
    [
        credential_acl(4321),  # read access for another user
        credential_acl(1234, group=4),  # the owning group reads it
        credential_acl(1234, named_group=50),  # a named group reads it
        credential_acl(1234, other=4),
        b"\x02\x00\x00\x00\x01",  # truncated
        acl_blob((USER, 4, 1234))[:4].replace(b"\x02", b"\x07") + acl_blob((USER, 4, 1234))[4:],  # version 7
    ],
)
def test_an_acl_that_lets_others_in_is_not_private(blob: bytes) -> None:
    assert not acl_private(blob, 1234)


def test_a_masked_out_entry_grants_nothing() -> None:
    entries = [(USER_OBJ, 4, NOBODY), (USER, 4, 4321), (GROUP_OBJ, 0, NOBODY), (MASK, 0, NOBODY), (OTHER, 0, NOBODY)]
    blob = acl_blob(*entries)
    assert acl_private(blob, 1234)


def test_read_secret_accepts_a_systemd_credential_and_refuses_a_shared_one(tmp_path: Path) -> None:
    """A real ACL on disk: the mode then reads 0440, as systemd's credentials do."""
    key = tmp_path / "sender.key"
    key.write_text("c2VjcmV0\n")
    key.chmod(0o400)
    try:
        os.setxattr(key, "system.posix_acl_access", credential_acl(os.getuid()))
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on {tmp_path} ({exc.strerror})")
    assert mode(key) == 0o440
    assert read_secret(key, "--secret-file") == "c2VjcmV0"
    os.setxattr(key, "system.posix_acl_access", credential_acl(os.getuid(), named_group=50))
    with pytest.raises(ConfigError, match="lets others read it"):
        read_secret(key, "--secret-file")
