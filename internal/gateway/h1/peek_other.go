//go:build !unix

package h1

import "net"

// rawFD: sockets cannot be peeked here; a caller that leaves is noticed at
// the first write that fails.
func rawFD(net.Conn) int { return -1 }

func peekClosed(int) bool { return false }
