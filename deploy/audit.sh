#!/usr/bin/env bash
# Dependency audit: pip-audit over the packages installed in the project's environment, judged against the
# documented allow-list deploy/pip-audit-allowlist.txt by deploy/audit_verdict.py.
#
#   deploy/audit.sh [PYTHON]        PYTHON: the environment to audit (default .venv/bin/python)
#
# Exit status: 0 nothing to report (or all allow-listed); 1 a vulnerability or an unauditable package that is
# not allow-listed; 2 the audit could not run; 3 no vulnerability data reachable (every package skipped), which
# is not a pass. pip-audit asks PyPI's JSON API (https://pypi.org/pypi/<name>/<version>/json).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
PIP_AUDIT_VERSION=2.10.1
# pip-audit lives in its own environment so that its dependencies are not audited as the project's.
TOOL_VENV="${MELLA_AUDIT_VENV:-.mella/tools/pip-audit-$PIP_AUDIT_VERSION}"
if [ ! -x "$TOOL_VENV/bin/pip-audit" ]; then
  "$PYTHON" -m venv "$TOOL_VENV"
  "$TOOL_VENV/bin/pip" install -q "pip-audit==$PIP_AUDIT_VERSION"
fi
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# pip-api (inside pip-audit) lists the packages of the interpreter named here, not of the tool environment.
set +e
PIPAPI_PYTHON_LOCATION="$PYTHON" "$TOOL_VENV/bin/pip-audit" --progress-spinner off --desc off \
  --format json --output "$report" 2>"$report.err"
status=$?
set -e
if [ ! -s "$report" ]; then
  echo "pip-audit did not produce a report (exit $status):" >&2
  cat "$report.err" >&2
  rm -f "$report.err"
  exit 2
fi
rm -f "$report.err"
exec "$TOOL_VENV/bin/python" deploy/audit_verdict.py "$report" deploy/pip-audit-allowlist.txt
