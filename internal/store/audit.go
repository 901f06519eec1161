package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Audit outcomes.
const (
	OutcomeOK      = "ok"      // the secret was revealed, or the action done
	OutcomeStarted = "started" // a streaming reveal began; an entry with its end follows
	OutcomeFailed  = "failed"  // it went wrong midway (what was revealed is counted)
	OutcomeDenied  = "denied"  // refused: expired, replayed, invalidated or unknown
)

// AuditEntry is one entry of the audit log. Seq numbers entries without gaps; Hash
// chains each to the one before (migrations/sql/0009_security.sql).
type AuditEntry struct {
	Seq     int64          `json:"seq"`
	At      time.Time      `json:"at"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Remote  string         `json:"remote"`
	Outcome string         `json:"outcome"`
	Detail  map[string]any `json:"detail"`
	Hash    string         `json:"hash"`
}

// AuditRecord is what a caller says about one event; the database adds the time,
// the sequence number and the hash.
type AuditRecord struct {
	Actor   string         // the token's name, or "anonymous"
	Action  string         // export_secrets, reveal_credentials, claim_issue, claim_redeem...
	Remote  string         // the client address
	Outcome string         // Outcome*; default OutcomeOK
	Detail  map[string]any // fleet, device, devices (a count)...
}

// Audited is an entry as written: the record and where it landed in the chain, for
// the log line that repeats it (a log kept elsewhere then anchors the chain).
type Audited struct {
	AuditRecord
	Seq  int64
	Hash string
}

type execer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Audit appends an entry to the audit log.
func (s *Store) Audit(ctx context.Context, rec AuditRecord) (Audited, error) {
	return appendAudit(ctx, s.pool, rec)
}

func appendAudit(ctx context.Context, q execer, rec AuditRecord) (Audited, error) {
	if rec.Outcome == "" {
		rec.Outcome = OutcomeOK
	}
	if rec.Detail == nil {
		rec.Detail = map[string]any{}
	}
	js, err := json.Marshal(rec.Detail)
	if err != nil {
		return Audited{}, fmt.Errorf("audit: %w", err)
	}
	a := Audited{AuditRecord: rec}
	var sum []byte
	if err := q.QueryRow(ctx, `
		INSERT INTO audit_log (actor, action, detail, remote, outcome) VALUES ($1, $2, $3, $4, $5)
		RETURNING seq, hash`, rec.Actor, rec.Action, js, rec.Remote, rec.Outcome).Scan(&a.Seq, &sum); err != nil {
		return Audited{}, fmt.Errorf("audit: %w", err)
	}
	a.Hash = hex.EncodeToString(sum)
	return a, nil
}

// AuditLog lists entries from since (zero: from the start), oldest first, at most
// limit of them, starting after seq after.
func (s *Store) AuditLog(ctx context.Context, since time.Time, after int64, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT seq, at, actor, action, remote, outcome, detail, hash FROM audit_log
		WHERE at >= $1 AND seq > $2 ORDER BY seq LIMIT $3`, since, after, limit)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		var sum []byte
		err := row.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Remote, &e.Outcome, &e.Detail, &sum)
		e.Hash = hex.EncodeToString(sum)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return out, nil
}

// ChainBreak is the first entry at which the audit chain does not hold.
type ChainBreak struct {
	Seq    int64  // the entry expected at this place (for a removed entry, the first one missing)
	Reason string // what does not match
}

func (b *ChainBreak) Error() string {
	return fmt.Sprintf("audit log broken at entry %d: %s", b.Seq, b.Reason)
}

// VerifyAudit walks the whole chain in pages and returns the number of entries that
// hold, the last entry's hash (hex), and the first break (nil when none). An edited entry no longer matches its
// hash; a removed one leaves a gap in seq and its successor's prev_hash pointing at
// nothing; entries removed from the end are found against audit_head.
func (s *Store) VerifyAudit(ctx context.Context) (int64, string, *ChainBreak, error) {
	n, prev, brk, err := s.verifyAudit(ctx)
	return n, hex.EncodeToString(prev), brk, err
}

func (s *Store) verifyAudit(ctx context.Context) (int64, []byte, *ChainBreak, error) {
	const page = 5000
	var seq int64
	prev := []byte{}
	for {
		rows, err := s.pool.Query(ctx, `
			SELECT seq, prev_hash, hash,
			       audit_entry_hash(prev_hash, seq, at, actor, action, detail, remote, outcome)
			FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, seq, page)
		if err != nil {
			return seq, prev, nil, fmt.Errorf("audit verify: %w", err)
		}
		n := 0
		var brk *ChainBreak
		for rows.Next() {
			n++
			var got int64
			var prevHash, hash, want []byte
			if err := rows.Scan(&got, &prevHash, &hash, &want); err != nil {
				rows.Close()
				return seq, prev, nil, fmt.Errorf("audit verify: %w", err)
			}
			switch {
			case got != seq+1:
				brk = &ChainBreak{Seq: seq + 1, Reason: missingEntries(seq+1, got-1)}
			case !bytes.Equal(prevHash, prev):
				brk = &ChainBreak{Seq: got, Reason: "its link to the entry before does not match (an entry before it was removed or altered)"}
			case !bytes.Equal(hash, want):
				brk = &ChainBreak{Seq: got, Reason: "its content does not match its hash (the entry was altered)"}
			}
			if brk != nil {
				rows.Close()
				return seq, prev, brk, nil
			}
			seq, prev = got, hash
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return seq, prev, nil, fmt.Errorf("audit verify: %w", err)
		}
		if n < page {
			break
		}
	}
	var headSeq int64
	var headHash []byte
	err := s.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_head`).Scan(&headSeq, &headHash)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if seq != 0 {
			return seq, prev, &ChainBreak{Seq: 1, Reason: "the chain's head record is missing"}, nil
		}
		return 0, prev, nil, nil
	case err != nil:
		return seq, prev, nil, fmt.Errorf("audit verify: %w", err)
	case headSeq != seq:
		return seq, prev, &ChainBreak{Seq: seq + 1, Reason: fmt.Sprintf("the log ends at entry %d but the chain's head is entry %d (entries removed from the end)", seq, headSeq)}, nil
	case !bytes.Equal(headHash, prev):
		return seq, prev, &ChainBreak{Seq: seq, Reason: "the last entry does not match the chain's head (altered)"}, nil
	}
	return seq, prev, nil, nil
}

// missingEntries names the entries first..last that the chain lacks: "entry 5 is
// missing", "entries 5 to 7 are missing".
func missingEntries(first, last int64) string {
	if first == last {
		return fmt.Sprintf("entry %d is missing", first)
	}
	return fmt.Sprintf("entries %d to %d are missing", first, last)
}
