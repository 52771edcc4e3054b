#!/bin/sh
# Installs what building and testing need when it is missing (Debian/Ubuntu):
# libzmq and pkg-config, so a fresh machine with Go can build, and Debian's
# prometheus package, which the dashboard test in observability/ runs
# (it starts /usr/bin/prometheus on its own port and storage dir, so a
# service the package may start does not get in its way), and nftables for
# the network-partition test in e2e/, and slurm-wlm and munge, which
# e2e/slurmtest starts as a one-node cluster for the Slurm tests, and
# python3-cloudpickle and python3-requests for the Python SDK and the
# manager's Python workers.
set -e
need=""
if ! pkg-config --exists libzmq 2>/dev/null; then
	need="libzmq3-dev pkg-config"
fi
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
if [ -z "$need" ]; then
	exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "missing:$need; install libzmq (>= 4.3) development files, pkg-config, prometheus (/usr/bin/prometheus), nftables, Slurm (slurmctld, slurmd, sbatch), munge and python3 with cloudpickle and requests" >&2
	exit 1
fi
echo "installing$need with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
