"""Container networking (network modes none and host for now)."""
