"""Where a model name leads: an embedded tiny model, a packaged real model (PyPI + GGUF), a local folder or a hub id."""
