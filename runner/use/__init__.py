"""Using a finished run: generate with its adapter, merge it into the base model."""
