#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the test
# suite (user postgres, trust authentication on loopback), installing and
# starting Debian's server if needed. Tests create and drop their own
# databases named rop_test_*.
set -euo pipefail

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  exit 0
fi
if [ ! -d /etc/postgresql ] || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  echo "Устанавливаю PostgreSQL для тестов"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # Loopback-only trust, for the disposable test databases.
  printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' | $sudo_cmd tee "$hba.rop" >/dev/null
  cat "$hba" | $sudo_cmd tee -a "$hba.rop" >/dev/null
  $sudo_cmd mv "$hba.rop" "$hba"
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
$sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
  sleep 1
done
echo "PostgreSQL не отвечает на 127.0.0.1:5432" >&2
exit 1
