package doctor

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/store"
)

// skewedStore is a database whose clock is skew away from this process's.
type skewedStore struct {
	skew time.Duration
	err  error
}

func (s skewedStore) SamplePasswords(context.Context, int) (store.PasswordSample, error) {
	return store.PasswordSample{}, nil
}

func (s skewedStore) ClockSkew(context.Context) (time.Duration, error) { return s.skew, s.err }

func TestClockCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		store   Store
		dbOK    bool
		outcome Outcome
		detail  string
	}{
		{"in step", skewedStore{skew: 0}, true, OK, "within 0s of the database's"},
		{"the database a little ahead", skewedStore{skew: 1234 * time.Millisecond}, true, OK, "within 1.234s of the database's"},
		{"the database a little behind", skewedStore{skew: -1234 * time.Millisecond}, true, OK, "within 1.234s of the database's"},
		{"at the bound", skewedStore{skew: MaxClockSkew}, true, OK, "within 5s of the database's"},
		{"the database ahead", skewedStore{skew: 7 * time.Second}, true, Fail,
			"this machine's clock is 7s from the database's (at most 5s): run NTP on both"},
		{"the database behind", skewedStore{skew: -90 * time.Second}, true, Fail,
			"this machine's clock is -1m30s from the database's (at most 5s): run NTP on both"},
		{"the clock unreadable", skewedStore{err: errors.New("database clock: connection reset")}, true, Fail,
			"database clock: connection reset"},
		{"the database failed its own check", skewedStore{skew: 7 * time.Second}, false, Skip, "needs the database"},
		{"no database", nil, true, Skip, "needs the database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := checkClock(context.Background(), Config{Store: tc.store}, tc.dbOK)
			require.Equal(t, Result{Name: "clock", Outcome: tc.outcome, Detail: tc.detail}, r)
		})
	}
}
