"""Helpers with no lockstep knowledge: atomic files, hashing, shell text, git facts, the cache, child processes, JSON lines."""
