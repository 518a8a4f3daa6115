"""The agent framework, in layers that only import downwards:
models → llm → store → (mixins) → topologies → runners.
"""
