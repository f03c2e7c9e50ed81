"""The embedded demo: a bundled instruction dataset and a tiny Llama model built locally."""

from __future__ import annotations

# tiny-llama and small-llama are built from the config file of the same name beside this module (random
# weights, no network); small-llama (about 30x the compute of tiny-llama) is for benchmarks that need a model
# less dominated by overheads. The others are real models fetched once by a pinned sha256 (runner.models.catalog).
BUILTIN_MODELS = ("builtin:tiny-llama", "builtin:small-llama", "builtin:smollm2-135m-instruct")
