#!/usr/bin/env bash
# The S3-compatible server the blob-store tests start on 127.0.0.1: moto
# (PyPI) in server mode, in its own virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/rop-test-tools/moto, so that nothing of the
# system Python changes. The tests run $dir/moto/bin/moto_server and fail
# with a pointer here when it is missing. A second run does nothing.
set -euo pipefail

# Pinned: a fresh machine gets the server the tests were written against.
moto_version="5.2.5"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/rop-test-tools"
venv="$dir/moto"
done_mark="$venv/.ready-$moto_version"
[ -f "$done_mark" ] && [ -x "$venv/bin/moto_server" ] && exit 0

python=""
for candidate in python3 python; do
  if command -v "$candidate" >/dev/null 2>&1; then
    python="$candidate"
    break
  fi
done
[ -n "$python" ] || {
  echo "Нужен Python 3 (python3) для тестового S3-сервера moto" >&2
  exit 1
}

# Debian's python3 lacks venv until python3-venv is installed.
if ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
  echo "Устанавливаю пакет: python3-venv"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv
fi

echo "Устанавливаю тестовый S3-сервер moto $moto_version в $venv"
rm -rf "$venv"
mkdir -p "$dir"
"$python" -m venv "$venv"
# Only S3 and the HTTP front end: moto[server] would also bring every other
# AWS service's dependencies (cfn-lint, sympy, …) and take three times longer.
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
  "moto[s3]==$moto_version" "flask==3.1.3" "flask-cors==6.0.5"; then
  rm -rf "$venv"
  echo "Не удалось установить moto $moto_version через pip (нужен доступ к PyPI)" >&2
  exit 1
fi
[ -x "$venv/bin/moto_server" ] || {
  echo "После установки нет $venv/bin/moto_server" >&2
  exit 1
}
touch "$done_mark"
echo "Тестовый S3-сервер готов: $venv/bin/moto_server"
