# Sourced by ./run and ./test: make .venv with the project and its test tools installed.
# Reinstalls only when pyproject.toml changed. Needs Python >= 3.11 and access to PyPI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv"
pick_python() {
  for py in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo "$py"; return; fi
  done
  echo "relance needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 1
}
if [ ! -x "$venv/bin/python" ]; then
  "$(pick_python)" -m venv "$venv"
fi
stamp="$venv/.relance-installed"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "relance: installing dependencies into .venv ..." >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  # setuptools tells every flat-layout editable install that folders named like its packages in
  # the working directory may shadow them (its category says: InformationOnly). Here they are
  # those very packages, so that one notice is filtered, by its first words; other warnings show.
  PYTHONWARNINGS="ignore:Editable installation" \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]" >&2
  echo "$want" > "$stamp"
fi
