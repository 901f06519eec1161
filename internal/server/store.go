package server

import (
	"context"
	"iter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/internal/store"
)

// Store is what the API needs of the database; *store.Store provides it. Declared
// here, by its consumer, so that the API depends on the methods it calls rather than
// on the store's whole surface; a handler that needs another adds it here.
type Store interface {
	Ping(ctx context.Context) error

	// Manifests: uploads, their progress, reports and fix-up files.
	CheckFleet(ctx context.Context, name string) error
	Ingest(ctx context.Context, req store.IngestRequest) (*store.IngestResult, error)
	GetManifest(ctx context.Context, id int64) (store.Manifest, error)
	ListManifests(ctx context.Context, fleetName string, limit int) ([]store.Manifest, error)
	ManifestProgress(ctx context.Context, id int64, groups *store.GroupQuery) (*store.Progress, error)
	CancelManifest(ctx context.Context, id int64, actor string) (*store.CancelResult, error)
	Report(ctx context.Context, id int64, secrets bool) iter.Seq2[store.ReportRow, error]
	Failures(ctx context.Context, manifestID int64, limit int) ([]store.Failure, error)
	FixupMetadataColumns(ctx context.Context, manifestID int64) ([]string, error)
	FixupRows(ctx context.Context, manifestID int64) iter.Seq2[store.FixupRow, error]

	// Fleets and devices.
	StatusOf(ctx context.Context, q store.StatusQuery) (*store.FleetStatus, error)
	GetDevice(ctx context.Context, fleetName, deviceID string) (*store.DeviceDetail, error)
	RetryFailed(ctx context.Context, fleetName string, manifestID int64, now bool,
		enqueue func(ctx context.Context, tx pgx.Tx, key string, devices int) error) (int, string, error)
	WorkFleets(ctx context.Context, key string) ([]string, error)
	WorkProgress(ctx context.Context, key string) (*store.Progress, error)
	RotationStatus(ctx context.Context, maxAge time.Duration) ([]store.FleetRotation, []store.RotationFailure, error)
	ReconcileRuns(ctx context.Context, limit int, withReports bool) ([]store.ReconcileRun, error)

	// Credentials: export, single reads and claims, each audited.
	Export(ctx context.Context, q store.ExportQuery) iter.Seq2[store.ExportRow, error]
	ExportMetadataColumns(ctx context.Context, q store.ExportQuery) ([]string, error)
	GetCredentials(ctx context.Context, fleetName, deviceID string) (store.Credentials, error)
	IssueClaims(ctx context.Context, req store.ClaimRequest, audit store.AuditRecord, issuer string) (store.ClaimsIssued, error)
	RedeemClaim(ctx context.Context, token string, audit store.AuditRecord) (store.Redeemed, error)
	Audit(ctx context.Context, rec store.AuditRecord) (store.Audited, error)
	AuditLog(ctx context.Context, since time.Time, after int64, limit int) ([]store.AuditEntry, error)

	// Webhooks.
	Webhooks(ctx context.Context, limit int) (*store.WebhookOverview, error)
	RedeliverWebhook(ctx context.Context, id int64) (bool, error)
}

var _ Store = (*store.Store)(nil)
