"""Persistent state: content-addressable blobs, layers and overlay mounts, SQLite metadata,
image references. Must not import ``api`` or ``engine``.
"""
