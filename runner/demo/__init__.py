"""The embedded demo: a bundled instruction dataset and a tiny Llama model built locally."""

from __future__ import annotations

# Each is built from the config file of the same name beside this module. small-llama (about
# 30x the compute of tiny-llama) is for benchmarks that need a model less dominated by overheads.
BUILTIN_MODELS = ("builtin:tiny-llama", "builtin:small-llama")
