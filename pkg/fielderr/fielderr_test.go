package fielderr

import (
	"errors"
	"testing"
)

func TestList(t *testing.T) {
	var empty List
	if empty.Err() != nil {
		t.Error("an empty List is a non-nil error")
	}
	l := List{New("spec.mtu", "%d is outside %d–%d", 65000, 576, 9216), {Message: "two documents"}}
	if got, want := l.Error(), "spec.mtu: 65000 is outside 576–9216; two documents"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var fe *Error
	if !errors.As(l.Err(), &fe) || fe.Field != "spec.mtu" {
		t.Errorf("errors.As found %v", fe)
	}
}
