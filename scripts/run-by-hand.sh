#!/bin/sh
# Start the three processes of one endpoint by hand, each in the
# background, with state under ./var. Stop them with: kill $(cat var/*.pid)
# Ports are the documented defaults; change them here if they are taken.
set -e
BIN=${BIN:-bin/switchyard}
EP=${EP:-demo}
mkdir -p var

"$BIN" forwarder --listen-http 127.0.0.1:8080 --listen-zmq tcp://127.0.0.1:55001 \
	--state-dir var/forwarder >var/forwarder.log 2>&1 &
echo $! >var/forwarder.pid

"$BIN" interchange --endpoint-id "$EP" --forwarder tcp://127.0.0.1:55001 \
	--listen-managers tcp://127.0.0.1:55002 --listen-http 127.0.0.1:8081 \
	--state-dir var/interchange >var/interchange.log 2>&1 &
echo $! >var/interchange.pid

"$BIN" manager --interchange tcp://127.0.0.1:55002 --workers 4 --manager-id "$(hostname)-1" \
	--listen-http 127.0.0.1:8082 --state-dir var/manager-1 >var/manager-1.log 2>&1 &
echo $! >var/manager-1.pid

echo "endpoint $EP: API http://127.0.0.1:8080, interchange admin http://127.0.0.1:8081, manager admin http://127.0.0.1:8082"
echo "try: $BIN submit -e $EP -- echo hello | $BIN wait -"
