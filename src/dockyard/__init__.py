"""dockyard: a container engine that speaks the Docker Engine API.

Layers (data flows one way): ``api`` → ``engine`` → ``runtime`` / ``store`` / ``logs``.
"""

__version__ = "0.1.0"
