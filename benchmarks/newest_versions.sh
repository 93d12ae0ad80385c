#!/usr/bin/env bash
# The package from pyproject.toml's ranges with the newest versions they allow, in a scratch venv outside the
# repository, then the whole suite there: does MELLA still work beside a user's newer stack?
#
#   benchmarks/newest_versions.sh [pytest args]        (default args: -q -p no:cacheprovider)
#
# Steps: a git worktree of $NEWEST_REF (default HEAD: commit what you want tested) in $NEWEST_DIR/repo, removed at
# the end; a venv from $PYTHON; the newest versions the ranges allow for the `dev` extra (what CI installs) resolved
# into $NEWEST_DIR/requirements.newest.txt and installed with pip as constraints (as the Makefile installs
# requirements.lock); the versions that differ from requirements.lock listed in $NEWEST_DIR/versions-diff.txt; then
# pytest under `nice` (≈ 40-60 min on 2 cores).
#
# Only torch is held back ($TORCH_PIN): torch 2.14+ on PyPI is a multi-GB CUDA build; 2.13.0 is a CPU wheel here.
# The resolve is `make lock`'s pip-compile with --upgrade (≈ 2 min; before pyproject.toml's aiobotocore floor it
# backtracked for over 15 min without an answer).
set -euo pipefail

REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
WORK=${NEWEST_DIR:-/tmp/mella-newest}
PYTHON=${PYTHON:-python3.11}
REF=${NEWEST_REF:-HEAD}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
# The local CPU torch wheel; elsewhere point this at a folder or index holding a CPU build (or leave it empty).
TORCH_FIND_LINKS=${TORCH_FIND_LINKS:-/opt/wheels}
[ "$#" -gt 0 ] || set -- -q -p no:cacheprovider

if [ -e "$WORK" ]; then
  echo "$WORK exists: remove it (git -C $REPO worktree remove --force $WORK/repo; rm -rf $WORK) or set NEWEST_DIR" >&2
  exit 2
fi
mkdir -p "$WORK"
git -C "$REPO" worktree add --detach --quiet "$WORK/repo" "$REF"
trap 'git -C "$REPO" worktree remove --force "$WORK/repo"' EXIT

"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check "pip-tools>=7.6,<8" 2>/dev/null

echo "$TORCH_PIN" >"$WORK/torch-constraint.txt"
find_links=()
[ -n "$TORCH_FIND_LINKS" ] && [ -d "$TORCH_FIND_LINKS" ] && find_links=(--find-links "$TORCH_FIND_LINKS")
echo "Resolving the newest allowed versions (dev extra, $TORCH_PIN) ..."
# The flags of the Makefile's lock target; the output keeps pip and setuptools out like requirements.lock.
(cd "$WORK/repo" && "$WORK/venv/bin/pip-compile" --quiet --extra dev --strip-extras --no-emit-index-url \
  --no-emit-find-links --unsafe-package mella --unsafe-package pip --unsafe-package setuptools --upgrade \
  "${find_links[@]}" -c "$WORK/torch-constraint.txt" -o "$WORK/requirements.newest.txt" pyproject.toml \
  >"$WORK/compile.log" 2>&1) || { tail -20 "$WORK/compile.log"; exit 1; }

echo "Installing them (≈ 2-8 min) ..."
"$WORK/venv/bin/pip" install --disable-pip-version-check --progress-bar off "${find_links[@]}" \
  -c "$WORK/requirements.newest.txt" -e "$WORK/repo[dev]" >"$WORK/install.log" 2>&1 ||
  { tail -20 "$WORK/install.log"; exit 1; }
"$WORK/venv/bin/pip" check

# name lock-version newest-version, for every package whose pin differs (normalized names, extras dropped).
export LC_ALL=C  # one collation for sort and join
pins() {
  grep -E '^[A-Za-z0-9]' "$1" | sed -e 's/\[.*\]//' -e 's/ *;.*//' |
    awk -F'==' '{n = tolower($1); gsub(/[_.]/, "-", n); print n, $2}' | sort
}
join -a1 -a2 -e - -o 0,1.2,2.2 <(pins "$REPO/requirements.lock") <(pins "$WORK/requirements.newest.txt") |
  awk '$2 != $3' | column -t | tee "$WORK/versions-diff.txt"

# That test checks that the environment *is* requirements.lock (what CI installs); this one differs by construction.
set -- "$@" --deselect tests/test_deploy.py::test_the_lock_pins_every_package_the_dev_install_needs
echo "Running the suite on the newest versions: pytest $*"
cd "$WORK/repo"
mkdir -p "$WORK/dagster_home"
rc=0
HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 DAGSTER_HOME="$WORK/dagster_home" \
  nice -n 15 "$WORK/venv/bin/python" -m pytest "$@" || rc=$?
[ "$rc" -eq 5 ] && rc=0  # no test collected (a -k that matches nothing) is not a failure, as in `make test`
exit "$rc"
