#!/usr/bin/env bash
# Run the butterflyd interoperability suite (pyzmq + Python protobuf client).
# Usage: tests/interop/run.sh [extra pytest args]
# The daemon under test: $BUTTERFLYD, else $BUTTERFLY_BIN_DIR/butterflyd, else
# .build/debug/butterflyd ($BUTTERFLYD_WAIT seconds to wait for it, e.g. during a build).
# A suite that cannot run fails, never skips into green: a missing daemon, protoc or Python
# module, a skipped test (see conftest.py) or no test at all exits non-zero.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.." || exit 1

fail() {
    echo "run.sh: $*" >&2
    echo "run.sh: FAILED: the interop suite did not run" >&2
    exit 1
}

daemon=${BUTTERFLYD:-${BUTTERFLY_BIN_DIR:-.build/debug}/butterflyd}
wait_limit=${BUTTERFLYD_WAIT:-0}
wait_limit=${wait_limit%%.*}
waited=0
until [ -f "$daemon" ] && [ -x "$daemon" ]; do
    [ "$waited" -lt "${wait_limit:-0}" ] ||
        fail "no butterflyd executable at $daemon (build it with 'swift build'; or set BUTTERFLY_BIN_DIR=DIR or BUTTERFLYD=PATH)"
    sleep 1
    waited=$((waited + 1))
done
BUTTERFLYD=$(realpath "$daemon")
export BUTTERFLYD

command -v protoc >/dev/null || fail "protoc not found on PATH (apt-get install protobuf-compiler)"

PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt ||
    fail "pip install -r tests/interop/requirements.txt failed"
missing=$(python3 -c '
import importlib.util
modules = ["pytest", "zmq", "google.protobuf", "cryptography"]
print(" ".join(m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None or importlib.util.find_spec(m) is None))
') || fail "python3 cannot run"
[ -z "$missing" ] || fail "Python modules missing after pip install: $missing"

# no cache dir: the suite writes nothing outside pytest temporary directories
python3 -m pytest -q -p no:cacheprovider tests/interop "$@"
status=$?
case $status in
    0) ;;
    5) fail "pytest collected no test (exit 5)" ;;
    *) echo "run.sh: FAILED: interop tests failed (pytest exit $status)" >&2 ;;
esac
exit $status
