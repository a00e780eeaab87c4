"""The ``dockyard`` command-line client."""
