"""One module per API resource: parse query and body, call the engine, serialize. No state rules."""
