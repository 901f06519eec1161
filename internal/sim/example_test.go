package sim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/vncfleet/vncfleet/internal/sim"
)

// A pipeline under development obtains a cloud address from the simulator exactly as
// it would from VNC Cloud, and the test checks the simulator's state.
func Example() {
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: "demo", Secret: "demo-secret"}}})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	req, _ := http.NewRequest("POST", ts.URL+"/cloud/1.1/static-address",
		strings.NewReader(`{"allowedActions":["listen"],"accessControl":{"groups":["support"]}}`))
	req.SetBasicAuth("demo", "demo-secret")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var created struct{ CloudAddress, CloudPassword string }
	_ = json.NewDecoder(resp.Body).Decode(&created)
	fmt.Println(resp.StatusCode, len(created.CloudPassword))

	// Readiness, with the default ReadyDelay of zero: ready at once.
	req, _ = http.NewRequest("GET", ts.URL+"/cloud/1.1/static-address/"+created.CloudAddress+"/ready", nil)
	req.SetBasicAuth("demo", "demo-secret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var ready struct{ Changes string }
	_ = json.NewDecoder(resp.Body).Decode(&ready)
	fmt.Println(ready.Changes)

	st := s.State().Accounts["demo"]
	fmt.Println(len(st.Addresses), st.Addresses[0].AllowedActions, st.Addresses[0].AccessControl.Groups,
		st.Addresses[0].Password == created.CloudPassword)
	// Output:
	// 201 20
	// none
	// 1 [listen] [support] true
}
