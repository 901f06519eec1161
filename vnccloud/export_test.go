package vnccloud

import (
	"context"
	"net/http"
)

// Raw sends a request the Client's methods refuse to build (an invalid body, a
// malformed address, a non-JSON Accept) through the client's own pipeline: auth, hooks,
// body limit and error decoding. path is relative to the base URL; header values
// replace the client's, an empty value removes the header. It returns the status (0
// when no answer arrived) and the call's error.
func (c *Client) Raw(ctx context.Context, op, method, path string, body []byte, header http.Header) (int, error) {
	r, err := c.do(ctx, call{op: op, method: method, target: c.base.String() + path, body: body, header: header}, nil)
	if r == nil {
		return 0, err
	}
	return r.status, err
}

// NextLink exposes the Link parser to the external tests.
var NextLink = nextLink
