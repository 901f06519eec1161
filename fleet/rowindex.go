package fleet

import (
	"hash/maphash"
	"strings"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// RowIndex applies the rules that span rows while a manifest streams past, keeping
// 8 bytes per device_id instead of the ids themselves: a million-row manifest is
// checked in 16 MB, without a second pass over the rows in the database.
//
// It stores a 62-bit hash of each device_id (seeded at random, so a manifest cannot
// be crafted to collide) and whether that row is a present connect device. Its
// answers are therefore of two kinds:
//   - DuplicateCandidates: rows whose device_id hashes like an earlier row's. Almost
//     always a real duplicate; the caller confirms each against the stored rows, so
//     a collision (about 1 in 10^7 for a million rows) is never reported.
//   - Unresolved: allow_devices entries that do not hash like a present connect row
//     of the manifest, split by whether the id hashes like some other row (then it
//     is an error) or like none (then the fleet may have it). An entry that collides
//     with a present connect row is accepted; at worst its listen device then waits
//     for an address that never comes and fails with a clear error.
//
// It gives up (Overflowed) rather than grow past MaxDevices ids or MaxPending
// unresolved entries, and the caller then checks the whole manifest in SQL.
type RowIndex struct {
	seed  maphash.Seed
	slots []uint64 // open addressing; 0 is empty, else hash | flags
	n     int

	// MaxDevices and MaxPending bound memory; see NewRowIndex.
	MaxDevices, MaxPending int

	candidates []RowRef
	pending    []RowRef
	overflow   bool

	// Present and Absent count the rows by desired state; FirstPresent holds the
	// first present device_ids, up to the limit given to NewRowIndex.
	Present, Absent int
	FirstPresent    []string
	firstCap        int
}

// RowRef is a device_id at a manifest line.
type RowRef struct {
	Line     int
	DeviceID string
}

const (
	slotUsed    = 1 // every stored hash has this bit, so a used slot is never 0
	slotConnect = 2 // the row is a present connect device
	slotFlags   = slotUsed | slotConnect
)

// NewRowIndex returns an index that gives up past maxDevices device_ids or
// maxPending unresolved allow_devices entries, and keeps the first firstPresent
// present device_ids for a plan.
func NewRowIndex(maxDevices, maxPending, firstPresent int) *RowIndex {
	return &RowIndex{seed: maphash.MakeSeed(), slots: make([]uint64, 1024),
		MaxDevices: maxDevices, MaxPending: maxPending, firstCap: firstPresent}
}

// Overflowed reports that the index gave up: its answers are incomplete.
func (x *RowIndex) Overflowed() bool { return x.overflow }

func (x *RowIndex) hash(id string) uint64 {
	return maphash.String(x.seed, id) &^ slotFlags
}

// find returns the slot of h, or of the empty slot where it belongs.
func (x *RowIndex) find(h uint64) int {
	mask := len(x.slots) - 1
	i := int(h>>2) & mask
	for x.slots[i] != 0 && x.slots[i]&^slotFlags != h {
		i = (i + 1) & mask
	}
	return i
}

func (x *RowIndex) grow() {
	old := x.slots
	x.slots = make([]uint64, 2*len(old))
	for _, s := range old {
		if s != 0 {
			x.slots[x.find(s&^slotFlags)] = s
		}
	}
}

// Add records a valid row. Rows must come in manifest order.
func (x *RowIndex) Add(d Device) {
	if d.State == StateAbsent {
		x.Absent++
	} else {
		x.Present++
		if len(x.FirstPresent) < x.firstCap {
			x.FirstPresent = append(x.FirstPresent, d.DeviceID)
		}
	}
	if x.overflow {
		return
	}
	if x.n >= x.MaxDevices {
		x.giveUp()
		return
	}
	h := x.hash(d.DeviceID)
	i := x.find(h)
	if x.slots[i] != 0 {
		// Cloned: the id is a slice of the whole CSV record, which it would keep alive.
		x.candidates = append(x.candidates, RowRef{d.Line, strings.Clone(d.DeviceID)})
		if len(x.candidates) > x.MaxPending {
			x.giveUp()
		}
	} else {
		flags := uint64(slotUsed)
		if d.Action == vnccloud.ActionConnect && d.State == StatePresent {
			flags |= slotConnect
		}
		x.slots[i] = h | flags
		x.n++
		if 2*x.n > len(x.slots) {
			x.grow()
		}
	}
	for _, dep := range d.AllowDevices {
		if !x.isConnect(dep) {
			// Perhaps a later row: decided in Unresolved.
			x.pending = append(x.pending, RowRef{d.Line, strings.Clone(dep)})
			if len(x.pending) > x.MaxPending {
				x.giveUp()
				return
			}
		}
	}
}

func (x *RowIndex) giveUp() {
	x.overflow = true
	x.slots, x.candidates, x.pending = nil, nil, nil
}

func (x *RowIndex) isConnect(id string) bool {
	s := x.slots[x.find(x.hash(id))]
	return s&slotConnect != 0
}

// DuplicateCandidates are the rows whose device_id may repeat an earlier row's.
func (x *RowIndex) DuplicateCandidates() []RowRef { return x.candidates }

// Unresolved splits the allow_devices entries that name no present connect row of
// the manifest: listed names a row of the manifest that is not a present connect
// device (an error whatever the fleet holds), unlisted names none of its rows (the
// fleet may hold it). Call it once every row has been added.
func (x *RowIndex) Unresolved() (listed, unlisted []RowRef) {
	for _, ref := range x.pending {
		switch s := x.slots[x.find(x.hash(ref.DeviceID))]; {
		case s&slotConnect != 0:
		case s != 0:
			listed = append(listed, ref)
		default:
			unlisted = append(unlisted, ref)
		}
	}
	return listed, unlisted
}
