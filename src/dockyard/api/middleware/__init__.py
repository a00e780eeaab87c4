"""Request pipeline stages: request id, API version window, authorization, audit."""
