//go:build !linux

package storetest

import "errors"

// startCluster is only implemented on Linux, where a child process can be
// tied to its parent's lifetime; elsewhere name a server to use.
func startCluster() (string, error) {
	return "", errors.New("a throwaway server is only started on Linux; set " + EnvPostgresURL)
}
