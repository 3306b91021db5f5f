"""Secret files and private runtime folders: created safely, read only when nobody else can.

Policy (README "Secrets and runtime files"):

* A secret we write (key, ticket) is created 0600 under a fresh random name with
  ``O_EXCL | O_NOFOLLOW`` (so neither a planted symlink nor a pre-existing temp file is ever
  opened), fsynced and renamed over the target: never readable by others, never half-written.
* A secret we read (``--secret-file``, ``--nsec-file``, token files) must be a regular file
  (not a symlink) that neither the group nor others can read or write, and not empty; anything
  else is refused with a one-line error saying what to run (``chmod 600 FILE``). A POSIX ACL
  that grants read access to us alone also passes (:func:`acl_private`): systemd hands
  ``LoadCredential=`` files over that way (0400 root's, plus ``user:US:r``), and ``stat`` then
  shows the ACL mask in the group bits (0440) although no group can read the file.
* A file that decides who may connect (``--authorized-keys``) may be readable by all but not
  writable by anyone but its owner.
* A private folder (the supervisor's run folder, the default control folder) is created
  0700; an existing one must belong to us with no group/other access, or it is refused. A
  folder the user named (``--control``) must belong to us and be writable by nobody else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from tunnelpy.common.errors import ConfigError

RUNDIR_PREFIX = "tunnel-py-run-"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from creation, creating parent folders.

    Raises OSError (the caller names its flag); the temp file never survives a failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _open_regular(path: Path, what: str, hint: str = "") -> tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise ConfigError(f"{what} {path}: is a symbolic link; point the flag at the file itself") from exc
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror}){'; ' + hint if hint else ''}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"{what} {path}: not a regular file")
    return fd, st


def _read_fd(fd: int) -> str:
    with os.fdopen(fd, encoding="utf-8") as fh:
        return fh.read()


# POSIX ACLs as Linux stores them in the ``system.posix_acl_access`` xattr: a little-endian u32
# version, then 8-byte entries (u16 tag, u16 permission bits, u32 uid/gid). acl(5), acl_ea.h.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x02, 0x04, 0x08, 0x10, 0x20


def acl_private(blob: bytes, uid: int) -> bool:
    """True if the access ACL ``blob`` lets nobody but its owner and ``uid`` read or write.

    Sans-IO (the caller reads the xattr). A named-user entry for ``uid`` may grant anything;
    the owning group, named groups, other users and others must have no permission, after
    the mask. A blob we cannot parse is not private.
    """
    if len(blob) < 4 or (len(blob) - 4) % 8 or int.from_bytes(blob[:4], "little") != _ACL_VERSION:
        return False
    entries = [
        (int.from_bytes(blob[i : i + 2], "little"), int.from_bytes(blob[i + 2 : i + 4], "little"), blob[i + 4 : i + 8])
        for i in range(4, len(blob), 8)
    ]
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0o7)
    for tag, perm, qualifier in entries:
        if tag == _ACL_USER and int.from_bytes(qualifier, "little") == uid:
            continue
        if tag in (_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP) and perm & mask:
            return False
        if tag == _ACL_OTHER and perm:
            return False
    return True


def _others_excluded(fd: int, st: os.stat_result) -> bool:
    """No group/other permission bits, or bits that are only an ACL mask for us (see module doc)."""
    if not st.st_mode & 0o077:
        return True
    if st.st_mode & 0o007 or st.st_uid not in (0, os.getuid()):  # an ACL'd file of a third user is theirs to read
        return False
    try:
        return acl_private(os.getxattr(fd, _ACL_XATTR), os.getuid())
    except OSError:  # no ACL (ENODATA) or none supported: the group bits are real
        return False


def read_secret(path: Path, what: str, hint: str = "") -> str:
    """The stripped content of a secret file that only its owner can read; ``hint`` says how to make one."""
    fd, st = _open_regular(path, what, hint)
    if not _others_excluded(fd, st):
        os.close(fd)
        raise ConfigError(
            f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
            f"run `chmod 600 {path}` (and consider the secret leaked)"
        )
    try:
        text = _read_fd(fd).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc})") from exc
    if not text:
        raise ConfigError(f"{what} {path}: the file is empty{'; ' + hint if hint else ''}")
    return text


def read_trusted(path: Path, what: str) -> str:
    """A file that decides who may connect: others may read it, only its owner may change it."""
    fd, st = _open_regular(path, what)
    if st.st_mode & 0o022:
        os.close(fd)
        raise ConfigError(
            f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others change who may connect; "
            f"run `chmod 644 {path}`"
        )
    try:
        return _read_fd(fd)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc})") from exc


def private_dir(path: Path, what: str, *, readable: bool = False) -> Path:
    """``path`` as a folder only we control: created 0700, or checked if it exists (ours, and no
    group/other access; with ``readable``, others may look in but not change it)."""
    try:
        if not os.path.lexists(path):
            path.mkdir(mode=0o700, parents=True)
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot create the folder ({exc.strerror})") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path}: not a folder (a symbolic link or a file is in the way)")
    if st.st_uid != os.getuid():
        raise ConfigError(f"{what} {path}: the folder belongs to uid {st.st_uid}, not to us; choose another path")
    if st.st_mode & (0o022 if readable else 0o077):
        raise ConfigError(
            f"{what} {path}: the folder is open to others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 700 {path}` or choose another path"
        )
    return path


def make_rundir() -> Path:
    """A fresh private run folder for this process, named so a successor can clean it up.

    ``mkdtemp`` creates it 0700 under an unpredictable name; the pid in the name tells
    :func:`remove_stale_rundirs` whether its owner still lives.
    """
    return Path(tempfile.mkdtemp(prefix=f"{RUNDIR_PREFIX}{os.getpid()}-"))


def remove_stale_rundirs(parent: Path | None = None) -> list[Path]:
    """Remove run folders of ours whose process is gone (a SIGKILLed predecessor); returns them."""
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    for entry in parent.glob(f"{RUNDIR_PREFIX}*"):
        pid_text = entry.name[len(RUNDIR_PREFIX) :].split("-", 1)[0]
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        if not pid_text.isdigit() or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if _alive(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_authorized_keys(path: str, where: str) -> frozenset[str]:
    """Read EndpointIds, one per line; ``#`` starts a comment; each must be 64 hex chars."""
    lines = read_trusted(Path(path), where).splitlines()
    keys = set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        key = text.split()[0].lower()
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ConfigError(f"{where} {path}:{number}: {key!r} is not an EndpointId (64 hex characters)")
        keys.add(key)
    return frozenset(keys)
