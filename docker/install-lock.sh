#!/bin/sh
# The dependency layer: a virtual environment at /opt/venv holding exactly a stack's lock.
# Used by the Dockerfile and by lockstep.def, so both install the same way.
# Usage: install-lock.sh PYTHON LOCKFILE WHEELHOUSE [PIP_ARGS...]
#   WHEELHOUSE: a directory of the lock's wheels (`nox -s wheelhouse`); it may be empty, and
#   then pip downloads them (pass --extra-index-url for stacks that need PyTorch's index).
set -eu
python="$1"; lock="$2"; wheelhouse="$3"; shift 3
"$python" -m venv /opt/venv
/opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-compile \
    --require-hashes --no-deps --find-links "$wheelhouse" "$@" -r "$lock"
# --no-deps installs a lock that lacks a package another one requires without a word: pip check
# names each such requirement, and its failure stops the build (the lock must be re-locked).
/opt/venv/bin/python -m pip check --disable-pip-version-check
# Byte code keyed by source hashes, not by the time pip unpacked each file, so the layer is the
# same bytes on every build. "Unchecked": nothing in the image ever edits these sources.
# Files that are not valid for this Python (torch ships Python 3.12-only test helpers) are
# skipped, as pip itself skips them.
/opt/venv/bin/python - <<'PY'
import compileall
import py_compile

compileall.compile_dir(
    "/opt/venv", quiet=2, force=True, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
)
PY
