package vnccloud

import (
	"fmt"
	"slices"
	"unicode/utf8"
)

// Action is what a cloud address does: a Viewer typically connects, a Server listens.
type Action string

const (
	ActionConnect Action = "connect"
	ActionListen  Action = "listen"
)

// Limits the server enforces (VNC Cloud API 1.1, "Obtaining a new cloud address").
const (
	MaxConnectGroups     = 16
	MaxACLGroups         = 24
	MaxACLCloudAddresses = 8
	MaxGroupNameChars    = 256
)

// AccessControl lists who may connect to a listen address. A nil *AccessControl on a
// listen Spec means "every connect address of the same API key may connect".
// A nil slice means the list is omitted; an empty non-nil slice is sent as [] and is
// rejected by the server (1005), so callers must not build one by accident.
type AccessControl struct {
	Groups         []string `json:"groups,omitempty"`
	CloudAddresses []string `json:"cloudAddresses,omitempty"`
}

// Spec is the desired shape of a cloud address: what create and update send.
type Spec struct {
	Action        Action
	Groups        []string       // connect only
	AccessControl *AccessControl // listen only
}

// Equal reports whether two specs describe the same cloud address. Group and address
// order is not significant to the server, so it is ignored here.
func (s Spec) Equal(o Spec) bool {
	if s.Action != o.Action || !sameSet(s.Groups, o.Groups) {
		return false
	}
	if (s.AccessControl == nil) != (o.AccessControl == nil) {
		return false
	}
	if s.AccessControl == nil {
		return true
	}
	return sameSet(s.AccessControl.Groups, o.AccessControl.Groups) &&
		sameSet(s.AccessControl.CloudAddresses, o.AccessControl.CloudAddresses)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	as, bs := slices.Clone(a), slices.Clone(b)
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

// ValidationError is a request the server would reject with 400 and Code. Field names the
// offending JSON field, for messages that point at the right manifest column.
type ValidationError struct {
	Code    ErrorCode
	Field   string // "allowedActions", "groups", "accessControl", "accessControl.groups", "accessControl.cloudAddresses", "cloudAddress"
	Message string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %s (errorCode %d)", e.Field, e.Message, int(e.Code))
}

// Validate applies the server's rules for a create or update body, in the order the
// simulator checks them, and returns the first violation as a *ValidationError.
//
// The rules, from the 1.1 reference: exactly one action, connect or listen (1003; an
// empty list is 1005). A connect address takes up to 16 groups and no access control; a
// listen address takes an access control list of up to 24 groups and 8 cloud addresses
// and no groups (1009 for the wrong field, 1004 for too many). A list that is present
// must not be empty (1005), an access control list must name something (1008), a group
// name has 1..256 characters, counted as UTF-8 characters rather than bytes (1006), and
// every listed cloud address must be well-formed (1007).
func (s Spec) Validate() error {
	return ValidateRaw(RawSpec{
		AllowedActions: []string{string(s.Action)},
		Groups:         s.Groups,
		AccessControl:  s.AccessControl,
	})
}

// RawSpec is a request body as it arrived on the wire, before it is known to be valid:
// the simulator decodes into it, so that a list that was present but empty ([] rather
// than absent) can be told apart from an omitted one.
type RawSpec struct {
	AllowedActions []string       `json:"allowedActions"`
	Groups         []string       `json:"groups"`
	AccessControl  *AccessControl `json:"accessControl"`
}

// ValidateRaw checks a wire body. See Spec.Validate for the rules.
func ValidateRaw(r RawSpec) error {
	switch {
	case r.AllowedActions == nil:
		return &ValidationError{Code: CodeInvalidAction, Field: "allowedActions", Message: "allowedActions is mandatory"}
	case len(r.AllowedActions) == 0:
		return &ValidationError{Code: CodeEmptyList, Field: "allowedActions", Message: "allowedActions is empty"}
	case len(r.AllowedActions) > 1:
		return &ValidationError{Code: CodeInvalidAction, Field: "allowedActions", Message: "exactly one action is allowed"}
	}
	action := Action(r.AllowedActions[0])
	switch action {
	case ActionConnect:
		if r.AccessControl != nil {
			return &ValidationError{Code: CodeWrongListForAction, Field: "accessControl", Message: "a connect address takes groups, not an access control list"}
		}
		return validateGroups("groups", r.Groups, MaxConnectGroups)
	case ActionListen:
		if r.Groups != nil {
			return &ValidationError{Code: CodeWrongListForAction, Field: "groups", Message: "a listen address takes an access control list, not groups"}
		}
		if r.AccessControl == nil {
			return nil
		}
		return validateACL(r.AccessControl)
	default:
		return &ValidationError{Code: CodeInvalidAction, Field: "allowedActions", Message: fmt.Sprintf("action %q is neither connect nor listen", truncate(string(action), 32))}
	}
}

func validateACL(acl *AccessControl) error {
	if acl.Groups == nil && acl.CloudAddresses == nil {
		return &ValidationError{Code: CodeEmptyACL, Field: "accessControl", Message: "the access control list names no groups and no cloud addresses"}
	}
	if err := validateGroups("accessControl.groups", acl.Groups, MaxACLGroups); err != nil {
		return err
	}
	if acl.CloudAddresses == nil {
		return nil
	}
	if len(acl.CloudAddresses) == 0 {
		return &ValidationError{Code: CodeEmptyList, Field: "accessControl.cloudAddresses", Message: "cloudAddresses is empty"}
	}
	if len(acl.CloudAddresses) > MaxACLCloudAddresses {
		return &ValidationError{Code: CodeTooMany, Field: "accessControl.cloudAddresses", Message: fmt.Sprintf("%d cloud addresses, at most %d are allowed", len(acl.CloudAddresses), MaxACLCloudAddresses)}
	}
	for _, a := range acl.CloudAddresses {
		if !IsWellFormedAddress(a) {
			return &ValidationError{Code: CodeMalformedAddress, Field: "accessControl.cloudAddresses", Message: fmt.Sprintf("cloud address %q is not well-formed", truncate(a, 100))}
		}
	}
	return nil
}

// validateGroups checks a groups list; nil means omitted and is always fine.
func validateGroups(field string, groups []string, max int) error {
	if groups == nil {
		return nil
	}
	if len(groups) == 0 {
		return &ValidationError{Code: CodeEmptyList, Field: field, Message: field + " is empty"}
	}
	if len(groups) > max {
		return &ValidationError{Code: CodeTooMany, Field: field, Message: fmt.Sprintf("%d groups, at most %d are allowed", len(groups), max)}
	}
	for _, g := range groups {
		if err := ValidateGroupName(g); err != nil {
			return &ValidationError{Code: CodeBadGroupName, Field: field, Message: err.Error()}
		}
	}
	return nil
}

// ValidateGroupName checks one group name: 1..256 characters. The limit counts UTF-8
// characters, not bytes, so a name of 256 three-byte characters is valid.
func ValidateGroupName(name string) error {
	if name == "" {
		return fmt.Errorf("group name is empty")
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("group name is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(name); n > MaxGroupNameChars {
		return fmt.Errorf("group name has %d characters, at most %d are allowed", n, MaxGroupNameChars)
	}
	return nil
}

// Address shape from the reference's examples: four dot-separated parts of 19 base62
// characters each, e.g. ztgDAEjLLP4yHwHrdz9.ztgPXJMFsk1NiEGpbAx.livEXXxXXSrGS1urBF5.FCRPRHbrZPyfmS6Nt4M.
const (
	addressParts    = 4
	addressPartLen  = 19
	AddressLength   = addressParts*addressPartLen + addressParts - 1
	base62Alphabets = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// IsWellFormedAddress reports whether s has the shape of a cloud address; the server
// answers 1007 for any other string in a URI.
func IsWellFormedAddress(s string) bool {
	if len(s) != AddressLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (i+1)%(addressPartLen+1) == 0 {
			if c != '.' {
				return false
			}
			continue
		}
		if !isBase62(c) {
			return false
		}
	}
	return true
}

func isBase62(c byte) bool {
	return ('0' <= c && c <= '9') || ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z')
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so a message never carries a broken UTF-8 sequence.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
