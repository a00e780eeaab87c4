"""Assemble the security stages from the daemon's configuration: policy (optional) and audit log.

The audit log defaults to ``<data-root>/audit.log``; ``--audit-log off`` turns it off (as dockerd, which
has none), with a warning at every start: it exists so operators can measure what auditing costs. The
daemon calls :meth:`Security.reload` on SIGHUP and :meth:`Security.close` at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from dockyard.config import DaemonConfig
from dockyard.security.audit_pipe import AuditLog

from .authz import AuthzMiddleware, OwnedObjects, PolicyHolder
from .stage import SecurityStage

log = logging.getLogger("dockyard.security")

AUDIT_OFF = "off"


@dataclass
class Security:
    """The running security stages."""

    audit: AuditLog | None
    holder: PolicyHolder | None = None
    stage: SecurityStage | None = None
    _reloading: asyncio.Task[bool] | None = None

    @classmethod
    async def start(
        cls, cfg: DaemonConfig, objects: OwnedObjects, operations: Mapping[str, str] | None = None
    ) -> Security:
        """Load the policy (a bad file stops the start) and open the audit log.

        Args:
            cfg: the daemon configuration (``policy``, ``audit_log``, ``data_root``).
            objects: the engine's objects as owner isolation sees them (containers, execs, images).
            operations: operation → method of every registered route.

        Returns:
            The running stages (one :class:`SecurityStage` when either is on).
        """
        holder = None
        if cfg.policy is not None:
            holder = await asyncio.to_thread(PolicyHolder, cfg.policy, operations)
        authz = AuthzMiddleware(holder, objects) if holder is not None else None
        audit = None
        if cfg.audit_log is not None and str(cfg.audit_log) == AUDIT_OFF:
            log.warning("!!! --audit-log off: API calls are NOT audited")
        else:
            audit = AuditLog(cfg.audit_log or cfg.data_root / "audit.log")
            await audit.open()
        sec = cls(audit, holder)
        if authz is not None or audit is not None:
            sec.stage = SecurityStage(authz, audit)
        return sec

    def reload(self) -> None:
        """Reload the policy file in a thread (SIGHUP); a bad file keeps the old policy and logs why."""
        if self.holder is None:
            log.info("SIGHUP: no --policy given, nothing to reload")
            return
        self._reloading = asyncio.ensure_future(self._reload(self.holder))

    async def _reload(self, holder: PolicyHolder) -> bool:
        new = await asyncio.to_thread(holder.load)
        if new is None:
            return False
        # Installed here, on the loop, together with dropping the plans made under the old policy: no
        # request can see the new policy and an old plan.
        holder.install(new)
        if self.stage is not None:
            self.stage.forget_plans()
        return True

    async def close(self) -> None:
        """Write out the audit log and stop its writer."""
        if self.audit is not None:
            await self.audit.close()
