package ratelimit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClockMap(t *testing.T) {
	t.Parallel()
	local := time.Now()
	// The database's clock runs an hour ahead of ours: slots still map to the right
	// local moment, through the offset measured on each round trip.
	db := local.UTC().Add(time.Hour).Round(0)
	at := func(d time.Duration) time.Time { return local.Add(d) }

	type sample struct {
		sent, received time.Duration // local times of the round trip
		db             time.Duration // the database's reading, relative to db
	}
	for _, tc := range []struct {
		name    string
		samples []sample
		// the local time of db+probe, relative to local
		probe, want time.Duration
	}{
		{"midpoint of the round trip", []sample{{0, 10 * time.Millisecond, 0}}, 100 * time.Millisecond, 105 * time.Millisecond},
		{"a shorter round trip wins", []sample{
			{0, 10 * time.Millisecond, 0},
			{time.Second, time.Second + 2*time.Millisecond, time.Second},
		}, 2 * time.Second, 2*time.Second + time.Millisecond},
		{"a longer one soon after does not", []sample{
			{0, 2 * time.Millisecond, 0},
			{time.Second, time.Second + 40*time.Millisecond, time.Second}, // waited for the row lock
		}, 2 * time.Second, 2*time.Second + time.Millisecond},
		{"an old sample gives way", []sample{
			{0, 2 * time.Millisecond, 0},
			{30 * time.Second, 30*time.Second + 20*time.Millisecond, 30 * time.Second},
		}, 31 * time.Second, 31*time.Second + 10*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var m clockMap
			for _, s := range tc.samples {
				m.sample(at(s.sent), at(s.received), db.Add(s.db))
			}
			got := m.local(db.Add(tc.probe))
			require.Equal(t, tc.want, got.Sub(local))
			require.Equal(t, time.Duration(0), got.Sub(at(tc.want)), "on the monotonic clock")
		})
	}

	var m clockMap
	m.sample(local, local, db)
	require.True(t, m.local(time.Unix(0, 0)).IsZero(), "the epoch of a row never paused is long past")
}

func TestSpacing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rate float64
		want time.Duration
	}{
		{10, 105 * time.Millisecond},
		{10.9, 105 * time.Millisecond}, // at most 10 whole requests in a second
		{0.5, 2100 * time.Millisecond},
		{50_000, 21000 * time.Nanosecond},
	} {
		c := Config{Rate: tc.rate}
		c.setDefaults()
		require.Equal(t, tc.want, c.spacing(), "rate %v", tc.rate)
	}
}

// TestClockUncertainty: the mapping is as uncertain as half its sample's round trip,
// more as the sample ages, and entirely before any sample.
func TestClockUncertainty(t *testing.T) {
	t.Parallel()
	var m clockMap
	local := time.Now()
	require.Equal(t, time.Hour, m.uncertainty(local))
	m.sample(local, local.Add(4*time.Millisecond), time.Unix(1e9, 0))
	require.Equal(t, 2*time.Millisecond, m.uncertainty(local.Add(2*time.Millisecond)))
	require.Equal(t, 3*time.Millisecond, m.uncertainty(local.Add(1002*time.Millisecond)), "aged by 1ms a second")
	c := Config{Rate: 10}
	c.setDefaults()
	require.Equal(t, 6250*time.Microsecond, (&Cluster{cfg: c}).maxClockError(), "an eighth of the 50ms margin")
}
