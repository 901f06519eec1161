package ratelimit

import "context"

// Class is whose request a Wait is for, when work of different kinds shares one
// budget. Each process hands the slots it leases to its waiters by class: while both
// classes wait, Onboarding gets Config.OnboardingShare of the slots and Rotation the
// rest; while only one waits, it gets them all, so no slot is left unused for the
// sake of a share. Across processes, a process whose waiters are all Rotation leases
// rotation's share only while another process's leases say it has Onboarding
// waiters. Local (one process: `demo`, benchmarks) does not split by class.
type Class int

const (
	// Onboarding is the work of manifests (creates, updates, deletes), readiness
	// polls and everything else that is not a rotation: devices waiting to be usable.
	Onboarding Class = iota
	// Rotation is the password rotation of devices already in use.
	Rotation
	numClasses
)

func (c Class) String() string {
	switch c {
	case Onboarding:
		return "onboarding"
	case Rotation:
		return "rotation"
	}
	return "unknown"
}

type classKey struct{}

type finishingKey struct{}

// Finishing returns a context whose Waits finish work already begun (a readiness poll
// after a create): they are served before the new work of their class. Polls are due
// only as fast as creates were sent a readiness delay earlier, so they cannot starve
// new work; and polls that never wait behind creates never pile up into a tail of
// polls alone at the end of a run (issue 12).
func Finishing(ctx context.Context) context.Context {
	return context.WithValue(ctx, finishingKey{}, true)
}

func isFinishing(ctx context.Context) bool {
	v, _ := ctx.Value(finishingKey{}).(bool)
	return v
}

// WithClass returns a context whose Waits are for class c.
func WithClass(ctx context.Context, c Class) context.Context {
	return context.WithValue(ctx, classKey{}, c)
}

// ClassOf is the class of ctx's Waits: Onboarding unless WithClass said otherwise.
func ClassOf(ctx context.Context) Class {
	if c, ok := ctx.Value(classKey{}).(Class); ok && c >= 0 && c < numClasses {
		return c
	}
	return Onboarding
}

// DefaultOnboardingShare is Config.OnboardingShare's default: onboarding first, and
// rotation never starved by a long onboarding.
const DefaultOnboardingShare = 0.9

// shares splits contended slots between the classes by weight: the next slot goes to
// the waiting class that has had the least of them for its weight (a deficit round
// robin over whole slots). Nothing is banked while a class does not wait, so a class
// that comes back gets its share from then on, not the slots it did not ask for.
type shares struct {
	weight [numClasses]float64
	served [numClasses]float64 // slots handed out since both classes last waited
}

func newShares(onboarding float64) shares {
	return shares{weight: [numClasses]float64{onboarding, 1 - onboarding}}
}

// pick chooses the class of the next slot among those with waiters, or -1.
func (s *shares) pick(waiting [numClasses]int) Class {
	best, contended := Class(-1), 0
	for c := range numClasses {
		if waiting[c] > 0 {
			contended++
		}
	}
	if contended == 0 {
		return -1
	}
	for c := range numClasses {
		if waiting[c] == 0 {
			continue
		}
		if contended == 1 {
			s.served = [numClasses]float64{}
			return c
		}
		if s.weight[c] <= 0 {
			continue
		}
		if best < 0 || s.served[c]/s.weight[c] < s.served[best]/s.weight[best] {
			best = c
		}
	}
	if best < 0 { // every waiting class has weight 0: take turns anyway
		for c := range numClasses {
			if waiting[c] > 0 {
				best = c
				break
			}
		}
	}
	s.served[best]++
	return best
}
