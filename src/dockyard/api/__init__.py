"""HTTP front end: listeners, the HTTP protocol, middleware and one router per resource.

Only this package knows HTTP, API versions and wire shapes. It imports ``engine`` and ``security``;
nothing below imports it.
"""
