// Package observability holds no code: its tests check that the Grafana
// dashboard in dashboards/switchyard.json and the example scrape config in
// scripts/prometheus.yml work against a live endpoint. They build
// ./cmd/switchyard, start a forwarder, an interchange and two managers as
// real processes, start Debian's Prometheus (/usr/bin/prometheus, installed
// by scripts/install-deps.sh) scraping them, drive load and faults, and then
// evaluate every PromQL expression of the dashboard through Prometheus's
// HTTP API, requiring data from each one.
package observability
