"""The optional C extension (the audit writer's inner loops); everything else is in pyproject.toml.

Optional: when it cannot be built (no compiler, Python or OpenSSL headers), installing still succeeds and
the pure-Python loops it replaces serve (slower).
"""

from setuptools import Extension, setup

CHAINFAST_PARTS = [
    "_chainfast",
    "chainfast_chain",
    "chainfast_format",
    "chainfast_text",
    "chainfast_buffer",
    "chainfast_unpack",
    "chainfast_render",
]

setup(
    ext_modules=[
        Extension(
            "dockyard.security._chainfast",
            # one module from several files: _chainfast.c is the module, chainfast.h lists the parts
            [f"src/dockyard/security/{name}.c" for name in CHAINFAST_PARTS],
            depends=["src/dockyard/security/chainfast.h"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)
