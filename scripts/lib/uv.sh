# Sourced by the repo's scripts: makes `uv` available, installing it from PyPI when missing.
# uv is the one tool a fresh machine needs; everything else comes from uv.lock.

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then
    return
  fi
  if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "installing uv from PyPI..." >&2
    python3 -m pip install --quiet --disable-pip-version-check uv \
      || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages uv
  fi
  uv() { python3 -m uv "$@"; }
}
