# Sourced by scripts/*: makes .venv (Python 3.11+) and installs into it what uv.lock pins
# (uv sync, quick when nothing changed), plus Node packages and system tools the tests need.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "grpc-serverfn needs Python 3.11 or newer on PATH (or set PYTHON=/path/to/python3.11)" >&2
  return 1
}

UV_VERSION=0.13.9
UV="$ROOT/.tools/uv/bin/uv"

# ensure_uv: uv, the installer that reads uv.lock, in .tools/uv (from PyPI, pinned).
ensure_uv() {
  if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "==> installing uv $UV_VERSION into .tools/uv" >&2
    "$(find_python)" -m venv "$ROOT/.tools/uv"
    "$ROOT/.tools/uv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
}

# ensure_venv EXTRAS: .venv with the package (editable) and EXTRAS (e.g. "test,dev"), exactly
# as uv.lock pins them; what other scripts installed stays (--inexact). A uv.lock that no
# longer matches pyproject.toml is an error, not a silent re-resolve: run scripts/lock.
ensure_venv() {
  local extras=$1
  ensure_uv
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV" >&2
    # With pip in it: tests/test_deploy.py installs the package as the Dockerfile does.
    "$(find_python)" -m venv "$VENV"
  fi
  local flags=() extra
  IFS=',' read -ra wanted <<< "$extras"
  for extra in "${wanted[@]}"; do
    [ -n "$extra" ] && flags+=(--extra "$extra")
  done
  if ! (cd "$ROOT" && UV_PROJECT_ENVIRONMENT="$VENV" "$UV" sync --locked --inexact --quiet \
      --python "$VENV/bin/python" "${flags[@]}"); then
    echo "grpc-serverfn: installing from uv.lock failed; if uv said the lock needs updating," \
      "pyproject.toml changed since uv.lock was made: run scripts/lock and commit uv.lock" >&2
    return 1
  fi
}

# ensure_node: Node.js and npm (from Debian's packages when missing and we are root).
ensure_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "==> installing Node.js and npm (apt-get)" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
      echo "grpc-serverfn's tests need Node.js 20+ and npm on PATH" >&2
      return 1
    fi
  fi
}

# npm_ci_if_changed DIR: `npm ci` in DIR whenever its package-lock.json changed since the last
# install (a stamp in node_modules records its hash).
npm_ci_if_changed() {
  local dir=$1
  local stamp="$dir/node_modules/.installed-lock-sha256"
  local want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing Node packages into ${dir#"$ROOT/"} (npm ci)" >&2
    npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
  fi
}

# ensure_node_packages: tests/interop/node/node_modules, installed from its package-lock.json.
ensure_node_packages() {
  ensure_node
  npm_ci_if_changed "$ROOT/tests/interop/node"
}

# ensure_typescript_client: clients/typescript's packages (npm ci when its package-lock.json
# changed), then the package built with tsc into clients/typescript/dist.
ensure_typescript_client() {
  ensure_node
  local dir="$ROOT/clients/typescript"
  npm_ci_if_changed "$dir"
  (cd "$dir" && node_modules/.bin/tsc -p tsconfig.json)
}

# ensure_valgrind: valgrind (from Debian's packages when missing and we are root), for
# scripts/bench-instructions and its smoke test.
ensure_valgrind() {
  if ! command -v valgrind >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "==> installing valgrind (apt-get)" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    else
      echo "scripts/bench-instructions needs valgrind on PATH (apt-get install valgrind)" >&2
      return 1
    fi
  fi
}

# ensure_web_example: examples/web's packages (the TypeScript client first, which it links),
# then the page bundled by esbuild into examples/web/dist (served by `serve --web-root`).
ensure_web_example() {
  ensure_typescript_client
  npm_ci_if_changed "$ROOT/examples/web"
  node "$ROOT/examples/web/build.mjs"
}

# ensure_chromium: Debian's chromium, for the browser tests (tests/test_browser.py drives it
# with playwright-core; nothing downloads a browser build).
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "==> installing chromium (apt-get)" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "tests/test_browser.py needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)" >&2
      return 1
    fi
  fi
}
