package zenlayer

import (
	"encoding/json"
)

// wireAnswer is every field an answer may carry, at the top level or inside
// "response": Zenlayer's general rules wrap the result in "response", the
// DescribeVncUrl page shows the inner object alone, and an error's code may sit
// at either level. Unknown fields are ignored (tolerant reader).
type wireAnswer struct {
	wireFields
	Response *wireFields `json:"response"`
}

type wireFields struct {
	RequestID string `json:"requestId"`
	URL       string `json:"url"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// DecodeResponse reads one answer of DescribeVncUrl: the VNC URL on success, an
// *APIError otherwise. It never returns both, and never a success without a URL.
//
// A 2xx answer is a success only if it is a JSON object with a non-empty string
// url (wrapped in "response" or bare) and no error code; a 2xx with a code is that error, and a
// 2xx without a url is CodeMalformedResponse. Any other status is an error, with
// the code and request id read from the body when it has them.
func DecodeResponse(status int, body []byte) (string, error) {
	var w wireAnswer
	// The error is deliberately dropped: a syntax error leaves w empty (Unmarshal
	// checks the whole input first), and a field of an unexpected type (a numeric
	// requestId, say) should not spoil an otherwise usable answer.
	_ = json.Unmarshal(body, &w)
	f := w.wireFields
	if r := w.Response; r != nil {
		// The documented wrapped shape wins where both levels say something.
		f.RequestID = firstNonEmpty(r.RequestID, f.RequestID)
		f.URL = firstNonEmpty(r.URL, f.URL)
		if r.Code != "" {
			f.Code, f.Message = r.Code, r.Message
		}
	}
	ok := status >= 200 && status <= 299
	switch {
	case ok && f.Code == "" && f.URL != "":
		return f.URL, nil
	case ok && f.Code == "":
		return "", &APIError{StatusCode: status, Code: CodeMalformedResponse, RequestID: f.RequestID,
			Message: "a success answer without a url"}
	default:
		return "", &APIError{StatusCode: status, Code: f.Code, RequestID: f.RequestID, Message: f.Message}
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
