"""The embedded demo: a bundled instruction dataset and a tiny Llama model built locally."""

from __future__ import annotations

BUILTIN_MODELS = ("builtin:tiny-llama",)
