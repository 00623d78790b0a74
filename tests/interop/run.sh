#!/usr/bin/env bash
# Run the butterflyd interoperability suite (pyzmq + Python protobuf client).
# Usage: tests/interop/run.sh [extra pytest args]
# Needs protoc on PATH and a built daemon at .build/debug/butterflyd
# (or BUTTERFLYD=/path/to/butterflyd).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.." || exit 1

PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt || {
    echo "run.sh: pip install -r tests/interop/requirements.txt failed" >&2
    exit 1
}

# no cache dir: the suite writes nothing outside pytest temporary directories
python3 -m pytest -q -p no:cacheprovider tests/interop "$@"
exit $?
