"""The agent framework, in layers that only import downwards:
errors, registry, extras → models → llm → store → mixins → topologies → runners.

`registry` holds the registries of the extension axes (mixins, topology types, runners), below the
models so they can check names against them; each imports its built-ins on first use.
"""
