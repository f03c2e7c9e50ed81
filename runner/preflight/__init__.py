"""Everything checked before a run starts: hardware, data, model, environment, memory, the backend's limits; the
recommended settings; and what preflight writes (the table, the report, the recommended config)."""
