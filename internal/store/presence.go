package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// presenceLockClass is the advisory lock class (the first key of the two-key form)
// under which each process locks its own worker id: "vnc".
const presenceLockClass = 0x76_6e_63

// presenceCheckEvery is how often a process checks that it still holds its lock.
const presenceCheckEvery = time.Second

// Presence is this process's registration as a live worker: a row in
// worker_processes and a session advisory lock on a connection of its own, held
// until Close or until the connection is lost.
//
// Claims are made under the presence's current ID. When the lock connection is lost
// (a database restart, the backend killed) other processes may take the process for
// dead and release its claims, so the presence cancels the context of every claim
// made under the lost id (Context) and registers again under a new id: no call is
// started on a claim another process may now hold.
type Presence struct {
	store *Store

	mu     sync.Mutex
	id     int64
	conn   *pgx.Conn
	ctx    context.Context // cancelled when the current id's lock is lost
	cancel context.CancelFunc

	stop context.CancelFunc
	done chan struct{}
}

// Register records this process as a live worker and starts watching its lock.
func (s *Store) Register(ctx context.Context) (*Presence, error) {
	p := &Presence{store: s, done: make(chan struct{})}
	if err := p.register(ctx); err != nil {
		return nil, err
	}
	watchCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p.stop = stop
	go p.watch(watchCtx)
	return p, nil
}

func (p *Presence) register(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, p.store.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("register worker: %w", err)
	}
	host, _ := os.Hostname()
	var id int64
	// One statement: the row becomes visible to others only with the lock held.
	err = conn.QueryRow(ctx, `
		WITH w AS (INSERT INTO worker_processes (hostname, pid) VALUES ($1, $2) RETURNING id)
		SELECT id FROM w, LATERAL pg_advisory_lock($3, w.id::int4) AS l`, host, os.Getpid(), presenceLockClass).Scan(&id)
	if err != nil {
		_ = conn.Close(ctx)
		return fmt.Errorf("register worker: %w", err)
	}
	claimCtx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	p.id, p.conn, p.ctx, p.cancel = id, conn, claimCtx, cancel
	p.mu.Unlock()
	return nil
}

// ID is the worker id claims are made under now.
func (p *Presence) ID() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id
}

// Current is the worker id claims are made under now, with a context that is
// cancelled once that id's lock is lost.
func (p *Presence) Current() (int64, context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id, p.ctx
}

// watch checks the lock connection every presenceCheckEvery; when it fails, the
// claims made under the old id are cancelled and the process registers again.
func (p *Presence) watch(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(presenceCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		conn := p.conn
		p.mu.Unlock()
		if conn != nil {
			pingCtx, cancel := context.WithTimeout(ctx, presenceCheckEvery*3)
			err := conn.Ping(pingCtx)
			cancel()
			if err == nil || ctx.Err() != nil {
				continue
			}
			p.mu.Lock()
			p.cancel()
			_ = p.conn.Close(context.Background())
			p.conn = nil
			p.mu.Unlock()
		}
		// Lost: keep trying to register again (the database may be restarting).
		if err := p.register(ctx); err != nil {
			continue
		}
	}
}

// Close gives up the registration: the row is marked gone and the lock released.
func (p *Presence) Close(ctx context.Context) error {
	p.stop()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancel()
	if p.conn == nil {
		return nil
	}
	_, err := p.conn.Exec(ctx, `UPDATE worker_processes SET gone_at = now() WHERE id = $1`, p.id)
	return errors.Join(err, p.conn.Close(ctx))
}

// DeadWorkers are processes found gone, with what was released of theirs.
type DeadWorkers struct {
	IDs             []int64
	ReleasedClaims  int64 // devices whose claim was released
	AttemptsSettled int64 // unanswered creates whose in-flight time was cut short
}

// ReleaseDeadWorkers finds the registered processes whose lock is free (they died)
// and releases every claim they held, so that their devices are taken over in
// seconds rather than at the end of the lease. Their unanswered creates can still be
// in progress at the server for at most callTimeout from now (the process's sockets
// closed with it), which bounds how long reconciliation waits for them.
func (s *Store) ReleaseDeadWorkers(ctx context.Context, callTimeout time.Duration) (DeadWorkers, error) {
	var dead DeadWorkers
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		ids, err := column[int64](ctx, tx, "dead workers", `
			UPDATE worker_processes w SET gone_at = now()
			WHERE w.gone_at IS NULL AND NOT EXISTS (
			    SELECT 1 FROM pg_locks l
			    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
			      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			      AND l.classid = $1::oid AND l.objid = w.id::oid)
			RETURNING w.id`, presenceLockClass)
		if err != nil || len(ids) == 0 {
			return err
		}
		dead.IDs = ids
		tag, err := tx.Exec(ctx, `
			UPDATE devices SET claim_until = now(), claim_worker = NULL
			WHERE claim_worker = ANY ($1) AND claim_until > now()`, ids)
		if err != nil {
			return fmt.Errorf("release dead workers' claims: %w", err)
		}
		dead.ReleasedClaims = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `
			UPDATE create_attempts SET in_flight_until = least(in_flight_until, now() + $2::interval)
			WHERE worker_id = ANY ($1) AND outcome = 'sent' AND in_flight_until > now() + $2::interval`, ids, callTimeout)
		if err != nil {
			return fmt.Errorf("release dead workers' attempts: %w", err)
		}
		dead.AttemptsSettled = tag.RowsAffected()
		// Rows of processes gone long ago serve nobody.
		_, err = tx.Exec(ctx, `DELETE FROM worker_processes WHERE gone_at < now() - interval '7 days'`)
		return err
	})
	if err != nil {
		return DeadWorkers{}, fmt.Errorf("release dead workers: %w", err)
	}
	return dead, nil
}
