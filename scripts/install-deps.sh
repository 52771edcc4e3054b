#!/bin/sh
# Installs libzmq and pkg-config when missing (Debian/Ubuntu), so a fresh
# machine with Go can build and test.
set -e
if pkg-config --exists libzmq 2>/dev/null; then
	exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "libzmq not found: install libzmq (>= 4.3) development files and pkg-config" >&2
	exit 1
fi
echo "installing libzmq3-dev and pkg-config with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libzmq3-dev pkg-config >/dev/null
