package messages

import (
	"errors"
	"fmt"
)

// Sentinel errors returned by Unpack; match them with errors.Is.
var (
	ErrEmpty       = errors.New("empty message")
	ErrVersion     = errors.New("unsupported protocol version")
	ErrUnknownType = errors.New("unknown message type")
	ErrTruncated   = errors.New("truncated message")
	ErrExtraFrames = errors.New("unexpected extra frames")
	ErrOversized   = errors.New("message over size limit")
	ErrMalformed   = errors.New("malformed header")
	ErrPayload     = errors.New("payload does not match header")
)

// ErrorCode is carried by an ErrorReply so a peer knows why it was refused.
type ErrorCode uint16

const (
	CodeUnknown ErrorCode = iota
	CodeVersion
	CodeUnknownType
	CodeMalformed
	CodeOversized
	CodeNotRegistered
	CodeRefused
)

var codeNames = [...]string{"unknown", "version", "unknown-type", "malformed", "oversized", "not-registered", "refused"}

func (c ErrorCode) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// CodeFor maps a decode error to the code sent back to the peer.
func CodeFor(err error) ErrorCode {
	switch {
	case errors.Is(err, ErrVersion):
		return CodeVersion
	case errors.Is(err, ErrUnknownType):
		return CodeUnknownType
	case errors.Is(err, ErrOversized):
		return CodeOversized
	case err == nil:
		return CodeUnknown
	default:
		return CodeMalformed
	}
}

// DecodeError wraps a sentinel with what was being read.
type DecodeError struct {
	Sentinel error
	Detail   string
}

func (e *DecodeError) Error() string { return e.Sentinel.Error() + ": " + e.Detail }
func (e *DecodeError) Unwrap() error { return e.Sentinel }

func derr(s error, format string, args ...any) error {
	return &DecodeError{Sentinel: s, Detail: fmt.Sprintf(format, args...)}
}
