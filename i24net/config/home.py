"""The network home: one folder holding a network's spec, directory, keys and state.

Layout (docs/home.md 1)::

    network.toml          the human-edited spec
    directory.signed      the current signed directory (msgpack [doc, signature])
    authority.pub         the directory authority's public key (hex): the trust anchor
    keys/<AGENCY>.key     an agency's private keys (mode 0600)
    keys/authority.key    the directory authority's signing key (mode 0600)
    keys/broker.toml      broker account passwords (mode 0600)
    state/                one SQLite file per daemon; directory.held (rollback guard)
    broker/               generated broker configuration
    logs/                 daemon logs

This is the file-system shell around the core: it reads and writes files, takes the real
clock and ``os.urandom``, and hands typed values to the core.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import nacl.signing

from i24net.core import directory as dirmod
from i24net.core.directory import Directory
from i24net.core.errors import ConfigError, DirectoryError
from i24net.core.keys import AgencyKeys, Prekey, PublicKeys
from i24net.core.netspec import NetworkSpec, build_directory, parse_spec
from i24net.core.shards import router_key_name

ENV_HOME = "I24NET_HOME"
DEFAULT_HOME = ".i24net"
ROUTER_ACCOUNT = "i24-router"
MACHINE_FILE = "machine.toml"  # in a machine's export (i24net.config.machine)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _write_private(path: Path, text: str) -> None:
    """Write a secret file created with mode 0600 (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _unhex(value: object, what: str) -> bytes:
    try:
        out = bytes.fromhex(str(value))
    except ValueError:
        raise ConfigError(f"{what} is not hexadecimal", reason="config.keys") from None
    if len(out) != 32:
        raise ConfigError(f"{what} must be 32 bytes", reason="config.keys")
    return out


class Home:
    """A network home folder. Cheap to construct; files are read on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self._directory: Directory | None = None

    @classmethod
    def resolve(cls, value: str | None = None) -> Home:
        """``--home`` if given, else ``$I24NET_HOME``, else ``./.i24net``."""
        return cls(value or os.environ.get(ENV_HOME) or DEFAULT_HOME)

    # -- paths ----------------------------------------------------------------------------
    @property
    def spec_file(self) -> Path:
        return self.path / "network.toml"

    @property
    def directory_file(self) -> Path:
        return self.path / "directory.signed"

    @property
    def anchor_file(self) -> Path:
        return self.path / "authority.pub"

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    @property
    def broker_dir(self) -> Path:
        return self.path / "broker"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    def key_file(self, agency: str) -> Path:
        return self.keys_dir / f"{agency}.key"

    def exists(self) -> bool:
        return self.spec_file.exists() and self.directory_file.exists()

    def require(self) -> None:
        if not self.exists():
            raise ConfigError(
                f"no network at {self.path}: run 'i24net init --home {self.path}' first "
                f"(or set --home / {ENV_HOME})", reason="config.home")

    # -- creation -------------------------------------------------------------------------
    def init(self, spec_text: str, *, force: bool = False) -> Directory:
        """Write the spec, generate every key, and issue directory version 1. ``force``
        replaces a network already there: its keys, stores, broker files and logs go (they
        belong to the old keys), the rest of the folder stays."""
        if self.spec_file.exists() and not force:
            raise ConfigError(f"a network already exists at {self.path} (use --force to "
                              "replace it)", reason="config.home")
        spec = parse_spec(_parse_toml(spec_text, "network.toml"))
        for sub in ("keys", "state", "broker", "logs"):
            if force and (self.path / sub).is_dir():
                shutil.rmtree(self.path / sub)
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        self.spec_file.write_text(spec_text)
        authority = os.urandom(32)
        _write_private(self.keys_dir / "authority.key", f'seed = "{authority.hex()}"\n')
        anchor = bytes(nacl.signing.SigningKey(authority).verify_key)
        self.anchor_file.write_text(anchor.hex() + "\n")
        for a in spec.agencies:
            self.write_keys(AgencyKeys.generate(a.id, os.urandom, now_ms=now_ms()))
        passwords = {a.id: secrets.token_urlsafe(24) for a in spec.agencies}
        passwords[ROUTER_ACCOUNT] = secrets.token_urlsafe(24)
        self.write_broker_passwords(passwords)
        held = self.state_dir / "directory.held"
        if held.exists():
            held.unlink()
        self._directory = None
        d = build_directory(spec, self.public_keys(spec), authority_key=anchor, serial=1,
                            issued_ms=now_ms(), router_keys=self._shard_keys(spec))
        self.publish_directory(d)
        return d

    def write_keys(self, keys: AgencyKeys) -> None:
        """The agency's key file: its long-term secrets and every prekey it still holds
        (docs/home.md). The sending key is never written: it lives in memory only."""
        prekeys = "".join(
            "\n[[prekey]]\n"
            f'secret = "{p.secret.hex()}"\n'
            f"issued_ms = {p.issued_ms}\n"
            + (f"retired_ms = {p.retired_ms}\n" if p.retired_ms is not None else "")
            for p in keys.prekeys)
        _write_private(self.key_file(keys.agency),
                       f'agency = "{keys.agency}"\n'
                       f'signing_seed = "{keys.signing_seed.hex()}"\n'
                       f'encryption_secret = "{keys.encryption_secret.hex()}"\n' + prekeys)

    def write_broker_passwords(self, passwords: dict[str, str]) -> None:
        """``keys/broker.toml``: each broker account's password (private, 0600)."""
        _write_private(self.keys_dir / "broker.toml",
                       "".join(f'"{u}" = "{p}"\n' for u, p in sorted(passwords.items())))

    # -- reading --------------------------------------------------------------------------
    def spec(self) -> NetworkSpec:
        self.require()
        return parse_spec(_parse_toml(self.spec_file.read_text(), str(self.spec_file)))

    def anchor(self) -> bytes:
        self.require()
        return _unhex(self.anchor_file.read_text().strip(), str(self.anchor_file))

    def keys(self, agency: str) -> AgencyKeys:
        path = self.key_file(agency)
        if not path.exists():
            if (self.path / MACHINE_FILE).exists():
                raise ConfigError(f"no private keys for {agency} here: {self.path} is a "
                                  f"machine's export ({MACHINE_FILE} lists what it runs) and "
                                  "holds its own agencies' keys only", reason="config.keys",
                                  agency=agency)
            raise ConfigError(f"no private keys for {agency} in {self.keys_dir} (is {agency} "
                              "an agency of this network?)", reason="config.keys",
                              agency=agency)
        data = _parse_toml(path.read_text(), str(path))
        raw_prekeys = data.get("prekey", [])
        if not isinstance(raw_prekeys, list) or not raw_prekeys:
            raise ConfigError(f"{path} holds no prekey: this home was made by an older "
                              "version; run 'i24net init --force' to make new keys",
                              reason="config.keys", agency=agency)
        prekeys = []
        for n, p in enumerate(raw_prekeys, 1):
            issued, retired = p.get("issued_ms"), p.get("retired_ms")
            if not isinstance(issued, int) or not (retired is None or isinstance(retired, int)):
                raise ConfigError(f"{path}: prekey {n} needs an integer issued_ms (and "
                                  "retired_ms, if retired)", reason="config.keys", agency=agency)
            prekeys.append(Prekey(_unhex(p.get("secret"), f"{path}: prekey {n} secret"),
                                  issued, retired))
        return AgencyKeys(agency, _unhex(data.get("signing_seed"), f"{path}: signing_seed"),
                          _unhex(data.get("encryption_secret"),
                                 f"{path}: encryption_secret"),
                          tuple(prekeys), os.urandom(32))

    def router_keys(self, shard: int = 1) -> AgencyKeys:
        """Router shard ``shard``'s signing key (routing stamps, reports); the directory
        lists shard k's at position k - 1."""
        return self.keys(router_key_name(shard))

    def _shard_keys(self, spec: NetworkSpec) -> tuple[bytes, ...]:
        """One signing key per router shard (``[router] shards``), generated when missing."""
        out = []
        for shard in range(1, spec.router_shards + 1):
            if not self.key_file(router_key_name(shard)).exists():
                self.write_keys(AgencyKeys.generate(router_key_name(shard), os.urandom))
            out.append(self.router_keys(shard).verify_key)
        return tuple(out)

    def authority_seed(self) -> bytes:
        path = self.keys_dir / "authority.key"
        if not path.exists():
            raise ConfigError("this home does not hold the directory authority key",
                              reason="config.keys")
        return _unhex(_parse_toml(path.read_text(), str(path)).get("seed"), str(path))

    def broker_passwords(self) -> dict[str, str]:
        path = self.keys_dir / "broker.toml"
        return {str(k): str(v) for k, v in _parse_toml(path.read_text(), str(path)).items()}

    def public_keys(self, spec: NetworkSpec) -> dict[str, PublicKeys]:
        out = {}
        for a in spec.agencies:
            if self.key_file(a.id).exists():
                out[a.id] = self.keys(a.id).public()
        return out

    def _held(self) -> tuple[int, str]:
        """(serial, digest hex or "") of the newest directory seen here: "SERIAL [DIGEST]"."""
        held = self.state_dir / "directory.held"
        if not held.exists():
            return 0, ""
        try:
            words = held.read_text().split()
            return int(words[0]), (words[1] if len(words) > 1 else "")
        except (ValueError, IndexError):  # empty or garbled: say so, not a traceback
            raise ConfigError(f"{held} is corrupt: it should hold the serial of the newest "
                              "directory seen here", reason="config.state") from None

    def held_serial(self) -> int:
        return self._held()[0]

    def directory(self) -> Directory:
        """The current directory, verified against the trust anchor, never older than held
        and never a different directory under the held serial (a fork)."""
        if self._directory is None:
            self.require()
            d = dirmod.load(self.directory_file.read_bytes(), self.anchor())
            serial, digest = self._held()
            if d.serial < serial:
                raise DirectoryError(
                    f"{self.directory_file} is version {d.serial} but version "
                    f"{serial} was already seen here: refusing a rollback",
                    reason="directory.rollback")
            if d.serial == serial and digest and d.digest.hex() != digest:
                raise DirectoryError(
                    f"{self.directory_file} is not the version {serial} seen here before: "
                    "two different directories claim it, refusing both",
                    reason="directory.fork")
            self._directory = d
        return self._directory

    def signed_directory(self) -> bytes:
        self.require()
        return self.directory_file.read_bytes()

    # -- new versions ---------------------------------------------------------------------
    def publish_directory(self, d: Directory) -> bytes:
        signed = d.sign(self.authority_seed())
        _write_atomic(self.directory_file, signed)
        (self.state_dir / "directory.held").write_text(f"{d.serial} {d.digest.hex()}\n")
        self._directory = d
        return signed

    def rotate(self, agency: str) -> tuple[Directory, AgencyKeys]:
        d = self.directory()
        d.agency(agency)
        new_keys = AgencyKeys.generate(agency, os.urandom, now_ms=now_ms())
        nd = d.rotate(agency, new_keys.public(), now_ms())
        self.write_keys(new_keys)
        self.publish_directory(nd)
        return nd, new_keys

    def rotate_prekeys(self, agencies: list[str] | None = None) -> Directory:
        """A new prekey for each of ``agencies`` (default: every active agency), the old
        one retired, prekeys retired longer ago than the directory's grace erased from the
        key files, and a new directory version listing the new prekeys."""
        d = self.directory()
        names = agencies if agencies is not None else [a.id for a in d.agencies.values()
                                                       if a.active]
        t = now_ms()
        listed = {}
        for name in names:
            d.agency(name)
            kk = self.keys(name).with_new_prekey(os.urandom(32), t).erase_prekeys(
                t, d.prekey_grace_ms)
            self.write_keys(kk)
            pk = kk.public()
            listed[name] = (pk.prekey, pk.prekey_sig)
        nd = d.rotate_prekeys(listed, t)
        self.publish_directory(nd)
        return nd

    def revoke(self, agency: str) -> Directory:
        return self.amend(lambda d, t: d.revoke(agency, t))

    def amend(self, change: Callable[[Directory, int], Directory]) -> Directory:
        """Issue ``change(current directory, now)`` as the next version (an operation
        created or changed, an agreement ended...)."""
        nd = change(self.directory(), now_ms())
        self.publish_directory(nd)
        return nd

    def reissue(self) -> Directory:
        """A new version from the edited network.toml (keys for new agencies generated)."""
        spec = self.spec()
        for a in spec.agencies:
            if not self.key_file(a.id).exists():
                self.write_keys(AgencyKeys.generate(a.id, os.urandom, now_ms=now_ms()))
        prev = self.directory()
        nd = build_directory(spec, self.public_keys(spec), authority_key=self.anchor(),
                             serial=prev.serial + 1, issued_ms=now_ms(), previous=prev,
                             router_keys=self._shard_keys(spec))
        self.publish_directory(nd)
        return nd


def _parse_toml(text: str, where: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}", reason="config.toml") from exc
