// Package fielderr is the error of a bad input value: one line that names the value's field
// by its path in the document (spec.clusterNetworks[1].cidr, node.vCPU) and shows the value.
// The ClusterNetwork checks of pkg/subnet (whose errors end up in a condition's message) and
// the plan checks of pkg/plan (whose errors sluicectl prints, one line each) share it.
package fielderr

import (
	"fmt"
	"strings"
)

// Error is one bad value.
type Error struct {
	Field   string // the path of the field; empty for a problem of the whole document
	Message string // what is wrong, showing the value
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// New makes an Error with a formatted message.
func New(field, format string, args ...any) *Error {
	return &Error{Field: field, Message: fmt.Sprintf(format, args...)}
}

// List is every problem of one document, in the order of its fields.
type List []*Error

// Error joins the problems on one line, so that the list fits a condition's message or a log
// line; callers that print one line per problem range over the list.
func (l List) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// Unwrap lets errors.As find each Error.
func (l List) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Err is l as an error, or nil when l is empty: a nil List in an error interface is not nil.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
