"""The toy world: a word-level vocabulary, prior capabilities with probe generators, and a new target task.

Everything is generated offline from a seed, so the whole world is reproducible and nothing is downloaded.
"""
