"""Container log files: reading, tail, since/until, follow. Must not import ``api`` or ``engine``."""
