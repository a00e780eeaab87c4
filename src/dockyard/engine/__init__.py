"""Use-cases (containers, images, system): the state rules live here.

Must not import ``dockyard.api``; sees no HTTP objects and no API versions.
"""
