package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// WebhookOverview counts the webhook outbox's events by outcome.
type WebhookOverview struct {
	Delivered int            `json:"delivered"` // answered 2xx (until pruned after the retention period)
	Pending   int            `json:"pending"`   // not delivered yet, still being tried
	Dead      int            `json:"dead"`      // given up after the last attempt
	DeadList  []WebhookEvent `json:"deadEvents"`
}

// WebhookEvent is one event of the outbox. Its payload never holds a password.
type WebhookEvent struct {
	ID         int64           `json:"id"`
	Type       string          `json:"type"`
	Payload    json.RawMessage `json:"payload"`
	CreatedAt  time.Time       `json:"createdAt"`
	Attempts   int             `json:"attempts"`
	DeadAt     *time.Time      `json:"deadAt,omitempty"`
	LastError  string          `json:"lastError,omitempty"`
	LastStatus int             `json:"lastStatus,omitempty"`
}

// Webhooks counts the outbox by outcome and lists the newest dead events, at most limit.
func (s *Store) Webhooks(ctx context.Context, limit int) (*WebhookOverview, error) {
	o := &WebhookOverview{}
	if err := s.pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL),
		       count(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL),
		       count(*) FILTER (WHERE dead_at IS NOT NULL)
		FROM webhook_events`).Scan(&o.Delivered, &o.Pending, &o.Dead); err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, event_type, payload, created_at, attempts, dead_at, coalesce(last_error, ''), coalesce(last_status, 0)
		FROM webhook_events WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	defer rows.Close()
	o.DeadList = []WebhookEvent{}
	for rows.Next() {
		var e WebhookEvent
		if err := rows.Scan(&e.ID, &e.Type, &e.Payload, &e.CreatedAt, &e.Attempts, &e.DeadAt, &e.LastError, &e.LastStatus); err != nil {
			return nil, fmt.Errorf("webhooks: %w", err)
		}
		o.DeadList = append(o.DeadList, e)
	}
	return o, rows.Err()
}

// RedeliverWebhook gives a dead event a fresh set of attempts, due now. It reports
// false when no dead event has that id.
func (s *Store) RedeliverWebhook(ctx context.Context, id int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE webhook_events SET dead_at = NULL, attempts = 0, next_attempt_at = now(), claim_until = NULL
		WHERE id = $1 AND dead_at IS NOT NULL`, id)
	if err != nil {
		return false, fmt.Errorf("redeliver webhook event %d: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}
