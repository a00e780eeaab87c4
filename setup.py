"""The optional C extension (the audit writer's inner loops); everything else is in pyproject.toml.

Optional: when it cannot be built (no compiler, Python or OpenSSL headers), installing still succeeds and
the pure-Python loops it replaces serve (slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dockyard.security._chainfast",
            ["src/dockyard/security/_chainfast.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)
