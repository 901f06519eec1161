package zenlayer_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/vncfleet/vncfleet/internal/sim/zenlayersim"
	"github.com/vncfleet/vncfleet/zenlayer"
)

// Fetch a console URL from the simulator, and see how each documented failure
// is classified.
func ExampleClient_DescribeVncUrl() {
	sim := zenlayersim.New(zenlayersim.Config{
		Credentials: map[string]string{"AKID-example": "example-password"},
		Instances:   map[string]string{"zec-1": "RUNNING", "zec-2": "STARTING"},
	})
	mux := http.NewServeMux()
	mux.Handle("/api/v2/zec", sim)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	c, err := zenlayer.New(zenlayer.Config{
		BaseURL:           srv.URL + "/api/v2",
		AccessKeyID:       "AKID-example",
		AccessKeyPassword: "example-password",
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	u, err := c.DescribeVncUrl(ctx, "zec-1")
	fmt.Println(strings.HasPrefix(u, zenlayersim.ConsoleBaseURL), err)

	_, err = c.DescribeVncUrl(ctx, "zec-2")
	fmt.Println("not ready:", zenlayer.IsInstanceNotReady(err), "retryable:", zenlayer.IsRetryable(err))

	_, err = c.DescribeVncUrl(ctx, "zec-404")
	fmt.Println("not found:", errors.Is(err, zenlayer.ErrInstanceNotFound), "retryable:", zenlayer.IsRetryable(err))

	sim.SetInstanceStatus("zec-2", "RUNNING")
	_, err = c.DescribeVncUrl(ctx, "zec-2")
	fmt.Println("after start:", err)
	// Output:
	// true <nil>
	// not ready: true retryable: false
	// not found: true retryable: false
	// after start: <nil>
}
