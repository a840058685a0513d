package plan

import (
	"fmt"
	"strings"
)

// FieldError is one bad input value. Its message is one line that names the field by its
// path in the file (node.vCPU, network.clusterNetwork[1], spec.clusterNetworks[0].cidr) and
// shows the offending value.
type FieldError struct {
	Path    string
	Message string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

func fieldErr(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Message: fmt.Sprintf(format, args...)}
}

// ErrorList is every problem found in one input, in the order of the file.
type ErrorList []*FieldError

// Error prints one problem per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each FieldError.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// orNil returns nil for an empty list, so that a nil ErrorList never becomes a non-nil error.
func (l ErrorList) orNil() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
