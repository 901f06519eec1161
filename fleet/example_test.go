package fleet_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/vncfleet/vncfleet/fleet"
)

// Reading a manifest: valid rows stream out of Next, invalid ones are collected in
// Problems, and the read goes on so that every problem is listed at once.
func ExampleReader() {
	manifest := "device_id,action,groups,allow_devices,location\n" +
		"viewer-1,connect,line-a;ops,,plant-7\n" +
		"server-1,listen,line-a,viewer-1,plant-7\n" +
		"server-2,listen,,viewer-1;server-2,plant-7\n"
	r, err := fleet.NewReader(strings.NewReader(manifest), fleet.ReaderOptions{})
	var header *fleet.Problems
	if errors.As(err, &header) {
		fmt.Println(header)
		return
	}
	for {
		d, err := r.Next()
		if err == io.EOF {
			break
		}
		fmt.Println(d.Line, d.DeviceID, d.Action, d.Groups, d.AllowDevices, d.Metadata)
	}
	fmt.Println(r.Problems())
	// Output:
	// 2 viewer-1 connect [line-a ops] [] [{location plant-7}]
	// manifest rejected: 2 problems
	// line 3, column 3 (groups): groups is for connect devices; a listen device names who may connect in allow_groups and allow_devices
	// line 4, column 4 (allow_devices): a device cannot allow itself
}
