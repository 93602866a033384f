// Package secret seals small secrets at rest (the credentials of LLM
// backends) with AES-256-GCM under the platform's secret key, and loads
// or creates that key.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length of the platform secret key: 32 bytes (AES-256).
const KeySize = 32

// EnvKey names the environment variable that can hold the key (base64 of
// 32 bytes); FileName is the key's file in the data directory otherwise.
const (
	EnvKey   = "PLINTH_SECRET_KEY"
	FileName = "secret.key"
)

// prefix marks a sealed value's format version.
const prefix = "v1:"

// ErrWrongKey is wrapped by Open when a value was sealed under another
// key; ErrDamaged when a value was changed or is not a sealed value.
var (
	ErrWrongKey = errors.New("sealed under a different secret key")
	ErrDamaged  = errors.New("sealed value is damaged or was altered")
)

// Key is the platform secret key. Its zero value is unusable; make one
// with NewKey, ParseKey or Load.
type Key struct {
	aead cipher.AEAD
	id   string
}

// NewKey returns a key from 32 raw bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("the secret key must be %d bytes, not %d", KeySize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	// The id names the key in sealed values and errors without revealing
	// anything about it.
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte("plinth secret key id"))
	return &Key{aead: aead, id: hex.EncodeToString(mac.Sum(nil)[:6])}, nil
}

// ParseKey reads a key written as base64 (standard or URL alphabet,
// padded or not), as in PLINTH_SECRET_KEY and the key file.
func ParseKey(text string) (*Key, error) {
	text = strings.TrimSpace(text)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(text); err == nil {
			return NewKey(raw)
		}
	}
	return nil, fmt.Errorf("the secret key is not base64 (make one with: head -c 32 /dev/urandom | base64)")
}

// Generate returns a new random key and its base64 text.
func Generate() (*Key, string, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, "", err
	}
	k, err := NewKey(raw)
	return k, base64.StdEncoding.EncodeToString(raw), err
}

// Load returns the platform secret key: text when it is not empty (the
// value of PLINTH_SECRET_KEY or of the config file), else the key file
// in dataDir, which is created with a new random key (mode 0600) when it
// does not exist. created reports that a key file was just written.
func Load(text, dataDir string) (k *Key, created bool, err error) {
	if strings.TrimSpace(text) != "" {
		k, err := ParseKey(text)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", EnvKey, err)
		}
		return k, false, nil
	}
	path := filepath.Join(dataDir, FileName)
	for range 2 {
		data, err := os.ReadFile(path)
		if err == nil {
			k, err := ParseKey(string(data))
			if err != nil {
				return nil, false, fmt.Errorf("%s: %w", path, err)
			}
			return k, false, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, false, fmt.Errorf("reading the secret key: %w", err)
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, false, fmt.Errorf("creating the data directory: %w", err)
		}
		k, text, err := Generate()
		if err != nil {
			return nil, false, err
		}
		// O_EXCL: when two processes start on one data directory, one key
		// wins and the other reads it.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("creating the secret key file: %w", err)
		}
		_, werr := f.WriteString(text + "\n")
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			os.Remove(path)
			return nil, false, fmt.Errorf("writing the secret key file: %w", err)
		}
		return k, true, nil
	}
	return nil, false, fmt.Errorf("%s appeared and vanished while reading it", path)
}

// ID names the key (a keyed hash, not the key): sealed values carry it,
// so a value sealed under another key is told apart from a damaged one.
func (k *Key) ID() string { return k.id }

// Seal encrypts plaintext, bound to context (what the value is, e.g.
// "llm_backends/east/credential"): it opens only with the same key and
// the same context, so a sealed value copied to another row is refused.
func (k *Key) Seal(plaintext, context string) (string, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := k.aead.Seal(nonce, nonce, []byte(plaintext), k.ad(context))
	return prefix + k.id + ":" + base64.RawStdEncoding.EncodeToString(out), nil
}

// Open decrypts a value made by Seal with the same context. It fails
// with ErrWrongKey when another key sealed it and ErrDamaged when it was
// altered (or sealed for another context).
func (k *Key) Open(sealed, context string) (string, error) {
	rest, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return "", fmt.Errorf("%w: not a sealed value", ErrDamaged)
	}
	id, body, ok := strings.Cut(rest, ":")
	if !ok {
		return "", fmt.Errorf("%w: not a sealed value", ErrDamaged)
	}
	if id != k.id {
		return "", fmt.Errorf("%w: it was sealed under key %s, this server's key is %s; start Plinth with the key that sealed it (%s or <data-dir>/%s)",
			ErrWrongKey, id, k.id, EnvKey, FileName)
	}
	raw, err := base64.RawStdEncoding.DecodeString(body)
	if err != nil || len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
		return "", fmt.Errorf("%w: not a sealed value", ErrDamaged)
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, raw[:n], raw[n:], k.ad(context))
	if err != nil {
		return "", fmt.Errorf("%w: authentication failed", ErrDamaged)
	}
	return string(plain), nil
}

func (k *Key) ad(context string) []byte { return []byte("plinth/" + context) }
