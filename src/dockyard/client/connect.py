"""Connecting the docker SDK to a dockyard daemon: ``-H``, then ``DOCKER_HOST``, then dockyard's socket."""

from __future__ import annotations

import os

import docker

DEFAULT_HOST = "unix:///var/run/dockyard.sock"


def connect(host: str | None = None, timeout: int = 60) -> docker.DockerClient:
    """A docker SDK client for the daemon at ``host``."""
    url = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    return docker.DockerClient(base_url=url, timeout=timeout)
