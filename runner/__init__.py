"""lockstep: run one LLM fine-tune identically anywhere."""
