#!/bin/sh
# Python of the stack's version and the unprivileged `lockstep` user, on any Debian/Ubuntu base.
# Official Python images have both Python and nothing to install; CUDA runtime images have no
# Python at all, so the distribution's packages are added (Ubuntu 22.04: python3.11 is in
# its `universe` component, enabled in NVIDIA's images).
# Usage: install-python.sh PYTHON_VERSION   (e.g. 3.11)
set -eu
version="$1"
if ! command -v "python${version}" >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "python${version}" "python${version}-venv" ca-certificates
    rm -rf /var/lib/apt/lists/*
fi
"python${version}" -m venv --help >/dev/null  # fail here, not in the next stage, if venv is missing
id -u lockstep >/dev/null 2>&1 || useradd --create-home --uid 1000 --user-group --shell /bin/sh lockstep
