"""lockstep: run one LLM fine-tune identically anywhere."""

__version__ = "0.1.0"
