// Package fault classifies errors by what the caller should do about them,
// so that each wire layer (the Plinth API, the MLflow API, the CLI) maps them
// to its own status codes in exactly one place.
package fault

import (
	"errors"
	"fmt"
)

// Kind says what went wrong from the caller's point of view.
type Kind string

const (
	Invalid            Kind = "invalid_argument"
	NotFound           Kind = "not_found"
	AlreadyExists      Kind = "already_exists"
	FailedPrecondition Kind = "failed_precondition"
	Unauthenticated    Kind = "unauthenticated"
	PermissionDenied   Kind = "permission_denied"
	ResourceExhausted  Kind = "resource_exhausted"
	TooLarge           Kind = "request_too_large"
	Unavailable        Kind = "unavailable"
	Internal           Kind = "internal"
)

// Error is an error with a Kind, a message fit to show a caller, and
// optional details (for example the offending field).
type Error struct {
	Kind    Kind
	Message string
	// Field names the input that was wrong, when there is one.
	Field string
	// Details carries extra machine-readable context.
	Details map[string]any
	// Err is the underlying cause; it is never shown to callers.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of the given kind.
func New(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// InvalidField reports a bad value in the named input field.
func InvalidField(field, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// Wrap attaches a kind and a caller-facing message to an underlying error.
func Wrap(kind Kind, err error, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Kind
	}
	return Internal
}

// Is reports whether err carries the given kind.
func Is(err error, kind Kind) bool {
	return err != nil && KindOf(err) == kind
}

// As returns the first *Error in err's chain.
func As(err error) (*Error, bool) {
	var fe *Error
	ok := errors.As(err, &fe)
	return fe, ok
}
