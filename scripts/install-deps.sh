#!/bin/sh
# Installs what building and testing need when it is missing (Debian/Ubuntu).
#   scripts/install-deps.sh build   only what building needs: libzmq, pkg-config
#   scripts/install-deps.sh [test]  that and what the tests need (the default)
# For the tests: Debian's
# prometheus package, which the dashboard test in observability/ runs
# (it starts /usr/bin/prometheus on its own port and storage dir, so a
# service the package may start does not get in its way), and nftables for
# the network-partition test in e2e/, and slurm-wlm and munge, which
# e2e/slurmtest starts as a one-node cluster for the Slurm tests, and
# python3-cloudpickle and python3-requests for the Python SDK and the
# manager's Python workers, and tmux, in which the CLI tests drive the
# commands on a terminal, and chromium, which the web UI's tests drive
# headless, and postgresql-15, which e2e/pgtest starts (initdb in a
# temporary directory) for the PostgreSQL store's tests.
set -e
what="${1:-test}"
case "$what" in
build | test) ;;
*)
	echo "usage: $0 [build|test]: build installs libzmq and pkg-config; test (the default) also what the tests need" >&2
	exit 2
	;;
esac
need=""
if ! pkg-config --exists libzmq 2>/dev/null; then
	need="libzmq3-dev pkg-config"
fi
if [ "$what" = test ]; then
if [ ! -x /usr/bin/prometheus ]; then
	need="$need prometheus"
fi
# Debian's python3 with cloudpickle and requests runs the Python SDK's tests
# and the manager's Python workers in them.
if ! /usr/bin/python3 -c 'import cloudpickle, requests' >/dev/null 2>&1; then
	need="$need python3 python3-cloudpickle python3-requests"
fi
# nft makes the network partitions of the e2e tests (firewall on loopback).
if ! command -v nft >/dev/null 2>&1 && [ ! -x /usr/sbin/nft ]; then
	need="$need nftables"
fi
# Slurm for the batch tests: the fixture runs munged, slurmctld and slurmd.
if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || ! command -v sbatch >/dev/null 2>&1; then
	need="$need slurm-wlm"
fi
if [ ! -x /usr/sbin/munged ]; then
	need="$need munge"
fi
# tmux gives the CLI tests a terminal (cmd/switchyard/pty_test.go).
if ! command -v tmux >/dev/null 2>&1; then
	need="$need tmux"
fi
# Headless Chromium drives the web UI's browser tests (forwarder/webui).
if [ ! -x /usr/bin/chromium ]; then
	need="$need chromium"
fi
# PostgreSQL for the postgres store's tests: e2e/pgtest runs initdb and
# postgres itself (the package's own cluster is not used).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
	need="$need postgresql-15"
fi
fi
if [ -z "$need" ]; then
	exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "missing:$need; install libzmq (>= 4.3) development files and pkg-config to build; for the tests also prometheus (/usr/bin/prometheus), nftables, Slurm (slurmctld, slurmd, sbatch), munge, tmux, chromium, postgresql and python3 with cloudpickle and requests" >&2
	exit 1
fi
echo "installing$need with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
