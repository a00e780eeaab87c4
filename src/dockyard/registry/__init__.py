"""Registry (distribution) client. Not yet implemented."""
