# Sourced by ./start and ./check: create .venv and install a requirements file when it changed.
req="$1"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.installed-$(basename "$req")"
sum="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
  .venv/bin/python -m pip install -q -r "$req"
  echo "$sum" > "$stamp"
fi
