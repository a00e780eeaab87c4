"""Caller identity, authorization policy (pure decisions) and the audit log."""
