// Package procrun builds the vncfleet binary and runs it as separate processes (the
// simulator, several `serve` workers, the CLI), as users run it: the end-to-end tests
// and the benchmarks that need real processes share it.
package procrun

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vncfleet/vncfleet/internal/syncbuf"
)

// Build compiles the vncfleet command of pkg (a package path such as
// "./cmd/vncfleet", relative to the working directory) into dir and returns the
// binary's path. Compiler output goes to stderr.
func Build(dir, pkg string) (string, error) {
	binary := filepath.Join(dir, "vncfleet")
	build := exec.Command("go", "build", "-o", binary, pkg)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	return binary, nil
}

// FreeAddr finds a loopback port nobody listens on.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// Proc is a running process whose output is kept, for failure reports and for
// tests that read its logs.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Out  *syncbuf.Buffer // stdout and stderr, interleaved
	Done chan struct{}   // closed once the process has exited
	Err  error           // what Wait returned; read it only after Done
}

// Start starts binary with args, this process's environment plus env.
func Start(name, binary string, env []string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, Out: &syncbuf.Buffer{}, Done: make(chan struct{})}
	p.Cmd = exec.Command(binary, args...)
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.Err = p.Cmd.Wait(); close(p.Done) }()
	return p, nil
}

// Kill kills the process, if it still runs, and waits for it.
func (p *Proc) Kill() {
	select {
	case <-p.Done:
	default:
		_ = p.Cmd.Process.Kill()
		<-p.Done
	}
}

// Exited says whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

// ErrStillRunning is Terminate's error for a process that outlived its time.
var ErrStillRunning = errors.New("still running")

// Terminate sends SIGTERM and waits up to within for the exit code.
func (p *Proc) Terminate(within time.Duration) (int, error) {
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.Exited() {
		return 0, err
	}
	select {
	case <-p.Done:
	case <-time.After(within):
		return 0, fmt.Errorf("%s: %w %s after SIGTERM", p.Name, ErrStillRunning, within)
	}
	return p.ExitCode()
}

// ExitCode waits for the process and returns its exit code; the error is one of
// Wait's other than a non-zero exit.
func (p *Proc) ExitCode() (int, error) {
	<-p.Done
	var exitErr *exec.ExitError
	if errors.As(p.Err, &exitErr) {
		return exitErr.ExitCode(), nil
	}
	return 0, p.Err
}

// WaitHealthy waits until url's /healthz answers 200 through client, for at most
// timeout; it fails at once if the process exits first.
func (p *Proc) WaitHealthy(url string, client *http.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited during start-up: %v\n%s", p.Name, p.Err, p.Out.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy at %s within %s", p.Name, url, timeout)
}

// Tail is the last n bytes of s, marked as cut when it is.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// Env is what `vncfleet serve` and the CLI need to run against a simulator.
type Env struct {
	DatabaseURL string
	SimURL      string // the simulator's base URL; the API is under /cloud/1.1
	APIKey      string
	APISecret   string
	AdminToken  string
	Rate        float64 // VNCCLOUD_RATE
}

// Vars is env as environment variables, with a fresh random secret key.
func (e Env) Vars() []string {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return []string{
		"DATABASE_URL=" + e.DatabaseURL,
		"VNCFLEET_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"VNCFLEET_TOKEN=" + e.AdminToken,
		"VNCCLOUD_API_URL=" + e.SimURL + "/cloud/1.1",
		"VNCCLOUD_API_KEY=" + e.APIKey,
		"VNCCLOUD_API_SECRET=" + e.APISecret,
		fmt.Sprintf("VNCCLOUD_RATE=%g", e.Rate),
	}
}
