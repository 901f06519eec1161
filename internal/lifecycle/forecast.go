package lifecycle

import "time"

// Schedule is when the scheduled rotation runs (river.PeriodicSchedule, a cron
// schedule, is one). Next is the first run strictly after t.
type Schedule interface{ Next(t time.Time) time.Time }

// Forecast is when the schedule rotates one device's password.
type Forecast struct {
	// DueAt is when the password gets older than MaxAge; absent for a device whose
	// password was never set (it is due already).
	DueAt *time.Time `json:"dueAt,omitempty"`
	// Overdue: the password is older than MaxAge now.
	Overdue bool `json:"overdue"`
	// NextRunAt is the scheduled run that will reset it, and StartsBy the latest its
	// reset starts, as the run spreads its resets over the window. Both are absent
	// when rotation is not scheduled (only "rotate now" resets it).
	NextRunAt *time.Time `json:"nextRunAt,omitempty"`
	StartsBy  *time.Time `json:"startsBy,omitempty"`
}

// NextRotation is the rotation rule for one password set at setAt (nil: never), as
// ScheduledRotation and store.ScheduleRotations apply it: a password is due once it
// is older than MaxAge; each scheduled run resets the passwords due when it runs,
// their starts spread evenly over Window from the run; so a password is reset by the
// first scheduled run after it falls due (the next run, when it is overdue already),
// at most Window after that run starts. A run resets only devices that are ready and
// owe nothing else (and whose credentials are not being claimed): a device busy with
// other work at that run waits for the next run after it. schedule nil: not
// scheduled.
func (c Config) NextRotation(schedule Schedule, setAt *time.Time, now time.Time) Forecast {
	c = c.withDefaults()
	var f Forecast
	from := now
	if setAt != nil {
		due := setAt.Add(c.MaxAge).UTC()
		f.DueAt = &due
		if due.After(now) {
			from = due
		}
	}
	f.Overdue = !from.After(now)
	if schedule != nil {
		run := schedule.Next(from).UTC()
		by := run.Add(c.Window)
		f.NextRunAt, f.StartsBy = &run, &by
	}
	return f
}
