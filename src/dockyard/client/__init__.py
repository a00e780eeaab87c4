"""Client helpers built on the docker SDK, for the ``dockyard`` CLI."""
