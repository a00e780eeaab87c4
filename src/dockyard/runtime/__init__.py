"""Thin adapter over the OCI runtime (crun/runc) and the per-container shim (conmon).

Runs the runtime and reports what happened; holds no state rules. Must not import ``api`` or ``engine``.
"""
