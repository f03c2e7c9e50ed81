"""lockstep: run one LLM fine-tune identically anywhere."""

from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent  # the files shipped inside the package (tables, demo data) are found from here
SOURCE_DIR = PACKAGE_DIR.parent  # the checkout (lockfiles/, pyproject.toml), or the directory the package was copied into
