#!/bin/sh
# Start the three processes of one endpoint by hand, each in the
# background, with state under ./var. Stop them with: kill $(cat var/*.pid)
# Ports are the documented defaults; change them here if they are taken.
# Secure by default: the forwarder writes its admin token, the endpoint is
# created with it, and the interchange writes the managers' credential.
set -e
BIN=${BIN:-bin/switchyard}
EP=${EP:-demo}
mkdir -p var

wait_file() { # wait_file FILE: until a daemon has written it
	i=0
	until [ -s "$1" ]; do
		i=$((i + 1))
		[ $i -le 300 ] || { echo "$1 was not written; see var/*.log" >&2; exit 1; }
		sleep 0.1
	done
}

"$BIN" forwarder --listen-http 127.0.0.1:8080 --listen-zmq tcp://127.0.0.1:55001 \
	--state-dir var/forwarder >var/forwarder.log 2>&1 &
echo $! >var/forwarder.pid
wait_file var/forwarder/admin.token
SWITCHYARD_TOKEN=$(cat var/forwarder/admin.token)
export SWITCHYARD_TOKEN

[ -s var/endpoint.credentials ] || "$BIN" endpoint create "$EP" --out var/endpoint.credentials

"$BIN" interchange --credentials var/endpoint.credentials --forwarder tcp://127.0.0.1:55001 \
	--listen-managers tcp://127.0.0.1:55002 --listen-http 127.0.0.1:8081 \
	--state-dir var/interchange >var/interchange.log 2>&1 &
echo $! >var/interchange.pid
wait_file var/interchange/manager.credentials

ROOT=
[ "$(id -u)" -ne 0 ] || ROOT=--allow-root
"$BIN" manager --interchange tcp://127.0.0.1:55002 --workers 4 --manager-id "$(hostname)-1" \
	--credentials var/interchange/manager.credentials $ROOT \
	--listen-http 127.0.0.1:8082 --state-dir var/manager-1 >var/manager-1.log 2>&1 &
echo $! >var/manager-1.pid

echo "endpoint $EP: API http://127.0.0.1:8080, interchange admin http://127.0.0.1:8081, manager admin http://127.0.0.1:8082"
echo "export SWITCHYARD_TOKEN=$SWITCHYARD_TOKEN"
echo "try: $BIN submit -e $EP -- echo hello | $BIN wait -"
