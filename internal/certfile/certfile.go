// Package certfile serves a TLS certificate from PEM files that may be replaced while
// the process runs (short-lived certificates renewed by an agent such as certbot or
// cert-manager): the files are read again when either changes, and a pair that
// cannot be loaded is reported while the last good certificate stays in use.
package certfile

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Reloader holds the certificate of a certificate file and a key file.
type Reloader struct {
	certFile, keyFile string
	logger            *slog.Logger

	// checkEvery bounds how often the files are looked at (defaultCheckEvery).
	checkEvery time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   stamp     // of the files when cert was loaded
	checked time.Time // last look at the files
}

// defaultCheckEvery: handshakes cost two stat calls at most once a second, and a
// renewed certificate is served within a second.
const defaultCheckEvery = time.Second

// stamp identifies a version of the two files.
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// New loads the pair once, so that a wrong file stops the process at its start.
func New(certFile, keyFile string, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, logger: logger, checkEvery: defaultCheckEvery}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	if err := r.load(st); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) stat() (stamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return stamp{}, fmt.Errorf("TLS certificate: %w", err)
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return stamp{}, fmt.Errorf("TLS key: %w", err)
	}
	return stamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

func (r *Reloader) load(st stamp) error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// LoadX509KeyPair's errors describe the PEM, never the key's bytes.
		return fmt.Errorf("TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &cert, st
	return nil
}

// GetCertificate is tls.Config.GetCertificate: the current certificate, read again
// first when the files changed since it was loaded.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= r.checkEvery {
		r.checked = now
		st, err := r.stat()
		switch {
		case err != nil:
			r.logger.Warn("TLS certificate files unreadable; serving the last good certificate", "err", err)
		case st != r.stamp:
			if err := r.load(st); err != nil {
				// A renewal caught between writing the certificate and the key gives a
				// mismatched pair for a moment: keep the old one and look again soon.
				r.logger.Warn("TLS certificate not reloaded; serving the last good one", "err", err)
			} else {
				r.logger.Info("TLS certificate reloaded", "cert_file", r.certFile)
			}
		}
	}
	return r.cert, nil
}

// Config is a server TLS configuration serving r's certificate, TLS 1.2 or later.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}
