#!/usr/bin/env bash
# Installs checkov from its own hashed lock (infra/checkov-requirements.lock) into
# .tools/checkov-venv, apart from the project's .venv (checkov's pins clash with the project's).
# Idempotent: does nothing when the venv already matches the lock. Usage (from anywhere):
#   bash infra/install-checkov.sh            # -> .tools/checkov-venv/bin/checkov
# Env: PYTHON (default python3), CHECKOV_VENV (default <repo>/.tools/checkov-venv),
#      UV (a uv binary to install with; default: uv from PATH, else pip --require-hashes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/infra/checkov-requirements.lock"
VENV="${CHECKOV_VENV:-$ROOT/.tools/checkov-venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.lock.sha256"
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ -x "$VENV/bin/checkov" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  touch "$STAMP"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
UV="${UV:-$(command -v uv || true)}"
if [ -n "$UV" ] && [ -x "$UV" ]; then
  "$UV" pip sync --quiet --python "$VENV/bin/python" --require-hashes "$LOCK"
else
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$LOCK"
fi
"$VENV/bin/checkov" --version >/dev/null
echo "$want" >"$STAMP"
echo "checkov $("$VENV/bin/checkov" --version) installed in $VENV"
