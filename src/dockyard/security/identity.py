"""Who is calling: established from the connection itself, never from anything the client sends.

On the unix socket the kernel tells us the peer's uid, gid and pid (``SO_PEERCRED``); names and
supplementary groups are looked up once per connection. TLS identities (certificate subject) are filled
by the TLS listener.
"""

from __future__ import annotations

import asyncio
import grp
import hashlib
import json
import pwd
import socket
import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True, eq=False)
class Identity:
    """The caller of one connection. Compared and hashed as an object (one per connection), not field by
    field: caches keyed on it must never serve one connection's caller to another, and hashing by ``id`` is
    what keeps those per-request lookups cheap."""

    transport: str  # "unix", "tls", "tcp"
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    user: str | None = None
    group: str | None = None
    groups: tuple[str, ...] = field(default=())
    cert_cn: str | None = None
    cert_sans: tuple[str, ...] = field(default=())
    cert_fingerprint: str | None = None

    @cached_property
    def audit_json(self) -> str:
        """The caller as the audit log shows it (JSON text, made once per connection)."""
        if self.cert_cn is not None or self.cert_fingerprint is not None:
            shown: dict[str, Any] = {"transport": self.transport, "cert_cn": self.cert_cn,
                                     "cert_fingerprint": self.cert_fingerprint,
                                     "cert_sans": list(self.cert_sans)}  # fmt: skip
        else:
            shown = {"transport": self.transport, "uid": self.uid, "gid": self.gid, "pid": self.pid,
                     "user": self.user}  # fmt: skip
        return json.dumps(shown, separators=(",", ":"))

    def describe(self) -> str:
        """A short human form for logs: ``uid=1000(alice) pid=42`` or ``cn=ci``."""
        if self.cert_cn is not None:
            return f"cn={self.cert_cn}"
        if self.uid is not None:
            return f"uid={self.uid}({self.user}) pid={self.pid}"
        return self.transport


_PEERCRED = struct.Struct("3i")


def unix_peer_identity(transport: asyncio.BaseTransport) -> Identity:
    """Identity of the process at the other end of a unix socket connection."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return Identity(transport="unix")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    user = _user_name(uid)
    return Identity(
        transport="unix",
        uid=uid,
        gid=gid,
        pid=pid,
        user=user,
        group=_group_name(gid),
        groups=_process_groups(pid),
    )


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _process_groups(pid: int) -> tuple[str, ...]:
    """Supplementary groups of the peer process, as names (from /proc: what the kernel enforces)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    gids = [int(g) for g in line.split()[1:]]
                    return tuple(name for g in gids if (name := _group_name(g)) is not None)
    except OSError:
        pass
    return ()


def tls_peer_identity(transport: asyncio.BaseTransport) -> Identity:
    """Identity from the client certificate OpenSSL verified during the handshake.

    Only the certificate is trusted (subject CN, subjectAltNames, SHA-256 of its DER form), never what the
    client sends over HTTP. Without a verified certificate (``--tls`` alone) the identity is anonymous.
    """
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return Identity(transport="tls")
    der = sslobj.getpeercert(binary_form=True)
    cert = sslobj.getpeercert() or {}
    return Identity(
        transport="tls",
        cert_cn=_subject_cn(cert.get("subject", ())),
        cert_sans=tuple(
            f"{_SAN_KIND.get(kind, kind)}:{value}" for kind, value in cert.get("subjectAltName", ())
        ),
        cert_fingerprint=hashlib.sha256(der).hexdigest() if der else None,
    )


_SAN_KIND = {"IP Address": "IP"}


def _subject_cn(subject: Any) -> str | None:
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
