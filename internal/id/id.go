// Package id makes the identifiers of Plinth's records: random, URL-safe
// and ordered by creation time, so that sorting by id sorts by age.
package id

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz" // Crockford base32, lower case

// New returns a 26-character identifier: 48 bits of millisecond time then
// 80 random bits, in the style of a ULID.
func New() string { return At(time.Now()) }

// At returns an identifier for time t; tests use it for stable ordering.
func At(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	rand.Read(b[6:])
	return encode(b)
}

func encode(b [16]byte) string {
	// 128 bits -> 26 base32 digits (130 bits, the top two always zero).
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
