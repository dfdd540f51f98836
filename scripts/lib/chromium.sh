# Sourced by scripts/test: makes Debian's headless Chromium available for the browser
# tests (tests/browser), apt-installing the `chromium` package when it is missing.
# Playwright drives this system browser; no browser is downloaded from elsewhere.

ensure_chromium() {
  local binary="${CONVOHUB_CHROMIUM:-/usr/bin/chromium}"
  if [[ -x $binary ]]; then
    return 0
  fi
  if [[ $EUID -ne 0 ]]; then
    echo "chromium: $binary is missing and this is not root; install it: apt-get install chromium" >&2
    return 1
  fi
  echo "installing Debian's chromium for the browser tests (first run only)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >&2
}
