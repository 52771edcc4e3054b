// Package logx builds the logrus logger each daemon is given.
package logx

import (
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
)

// New returns a logger writing text or JSON to w (stderr when nil).
func New(format, level string, w io.Writer) (*logrus.Logger, error) {
	l := logrus.New()
	if w == nil {
		w = os.Stderr
	}
	l.SetOutput(w)
	switch format {
	case "", "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	default:
		return nil, fmt.Errorf("invalid --log-format %q: use text or json", format)
	}
	if level == "" {
		level = "info"
	}
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	l.SetLevel(lv)
	return l, nil
}

// Discard is a logger for tests that do not read logs.
func Discard() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
