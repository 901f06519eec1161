package vnccloud_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// Example creates a connect address against the simulator, waits until it is ready,
// and resets its password with If-Match, as vncfleet does for every device.
func Example() {
	// The real API takes a few seconds to make an address ready.
	_, client, stop := simulated(sim.Config{ReadyDelay: 50 * time.Millisecond})
	defer stop()
	ctx := context.Background()

	created, err := client.Create(ctx, vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"line-a"}})
	if err != nil {
		panic(err)
	}
	fmt.Println("created:", vnccloud.IsWellFormedAddress(created.CloudAddress))

	// Poll /ready with a growing interval until the address is usable.
	ready := false
	for wait := 20 * time.Millisecond; !ready; wait *= 2 {
		time.Sleep(wait)
		if ready, err = client.Ready(ctx, created.CloudAddress); err != nil {
			panic(err)
		}
	}
	fmt.Println("ready:", ready)

	// GET gives the ETag; the reset only applies if nobody changed the address since.
	details, err := client.Get(ctx, created.CloudAddress)
	if err != nil {
		panic(err)
	}
	reset, err := client.ResetPassword(ctx, created.CloudAddress, details.ETag)
	if err != nil {
		panic(err)
	}
	fmt.Println("password changed:", reset.CloudPassword != created.CloudPassword)
	fmt.Println("printed safely:", fmt.Sprint(reset) == fmt.Sprintf("{CloudAddress:%s CloudPassword:<redacted>}", created.CloudAddress))
	// Output:
	// created: true
	// ready: true
	// password changed: true
	// printed safely: true
}

// Example_unknownOutcome: a reset the cloud performed but whose answer was cut off is
// an unknown outcome. The cloud now holds a password nobody knows, so the only way
// back to a known one is another reset.
func Example_unknownOutcome() {
	s, client, stop := simulated(sim.Config{})
	defer stop()
	ctx := context.Background()
	created, err := client.Create(ctx, vnccloud.Spec{Action: vnccloud.ActionConnect})
	if err != nil {
		panic(err)
	}

	s.SetFaults(sim.Faults{GarbleRate: 1}) // every reset is committed, its answer cut off
	_, err = client.ResetPassword(ctx, created.CloudAddress, "")
	var unknown *vnccloud.UnknownOutcomeError
	fmt.Println("unknown outcome:", errors.Is(err, vnccloud.ErrUnknownOutcome), "retryable:", vnccloud.IsRetryable(err))
	fmt.Println("the cloud acted:", errors.As(err, &unknown) && unknown.Status == 200)

	s.SetFaults(sim.Faults{})
	reset, err := client.ResetPassword(ctx, created.CloudAddress, "")
	if err != nil {
		panic(err)
	}
	fmt.Println("known again:", reset.CloudPassword == s.State().Accounts["demo"].Addresses[0].Password)
	// Output:
	// unknown outcome: true retryable: true
	// the cloud acted: true
	// known again: true
}

// simulated serves a simulator with the account demo:demo-secret over HTTP and
// returns it with a client of it, and a function that stops it.
func simulated(cfg sim.Config) (*sim.Server, *vnccloud.Client, func()) {
	cfg.Accounts = []sim.Account{{Key: "demo", Secret: "demo-secret"}}
	s, err := sim.New(cfg)
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(s.Handler())
	client, err := vnccloud.New(vnccloud.Config{BaseURL: srv.URL + "/cloud/1.1", APIKey: "demo", APISecret: "demo-secret"})
	if err != nil {
		panic(err)
	}
	return s, client, srv.Close
}
