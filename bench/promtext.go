package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metrics is one scrape of a Prometheus text endpoint: each series, keyed
// by its name and labels as printed (`name{a="b"}`), with its value.
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format; comments and lines that
// do not parse are skipped.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the last space outside the label braces.
		cut := strings.LastIndexByte(line, '}')
		rest := line
		key := ""
		if cut >= 0 {
			key, rest = line[:cut+1], line[cut+1:]
		} else {
			sp := strings.IndexByte(line, ' ')
			if sp < 0 {
				continue
			}
			key, rest = line[:sp], line[sp:]
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			continue
		}
		m[key] = v
	}
	return m, sc.Err()
}

// Sum adds the series of name whose labels include every pair in labels
// (name1, value1, ...). A missing metric is 0.
func (m Metrics) Sum(name string, labels ...string) float64 {
	total := 0.0
	for k, v := range m {
		n, ls, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(ls, labels[i]+`="`+labels[i+1]+`"`) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// Has reports whether any series of name exists.
func (m Metrics) Has(name string) bool {
	for k := range m {
		if n, _, _ := strings.Cut(k, "{"); n == name {
			return true
		}
	}
	return false
}

// Scrape fetches and parses url.
func Scrape(ctx context.Context, hc *http.Client, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", url, resp.StatusCode)
	}
	return ParseMetrics(resp.Body)
}
