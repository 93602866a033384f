package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
)

// Authenticator checks a platform credential (an API key or an OIDC token);
// the gateway uses it when the bearer token is not one of the endpoint's
// keys, and always for auth_mode "token".
type Authenticator interface {
	// Authorize returns the caller's principal and key id if token is valid
	// and may call endpoints in workspace (endpoints.invoke), else an error
	// wrapping ErrUnauthenticated (invalid credentials: 401) or
	// ErrForbidden (valid but not allowed: 403). Any other error is
	// answered 503.
	Authorize(ctx context.Context, token, workspace string) (principal, keyID string, err error)
}

// Errors an Authenticator wraps to say why a credential was refused.
var (
	// ErrUnauthenticated: the credential is missing, unknown, revoked or
	// expired (401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the credential is valid but may not invoke endpoints in
	// the workspace (403).
	ErrForbidden = errors.New("forbidden")
)

// Principal recorded for calls made with an endpoint key.
const EndpointKeyPrincipal = "endpoint-key"

// credential returns the token of the request: "Authorization: Bearer
// <token>" or, as Azure OpenAI clients send it, "api-key: <token>".
func credential(h http.Header) string {
	if v := h["Authorization"]; len(v) > 0 {
		a := v[0]
		if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			return strings.TrimSpace(a[7:])
		}
	}
	if v := h["Api-Key"]; len(v) > 0 {
		return strings.TrimSpace(v[0])
	}
	return ""
}

// matchKey compares SHA-256(token) with every key of the endpoint in
// constant time and returns the matching key, or nil.
func (e *endpoint) matchKey(token string) *endpointKey {
	if len(e.keys) == 0 {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	var found *endpointKey
	for i := range e.keys {
		if subtle.ConstantTimeCompare(sum[:], e.keys[i].sum[:]) == 1 {
			found = &e.keys[i]
		}
	}
	return found
}
