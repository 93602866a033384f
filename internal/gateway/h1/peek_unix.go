//go:build unix

package h1

import (
	"net"
	"syscall"
)

// rawFD is the socket's descriptor, for peeking; -1 when there is none.
func rawFD(nc net.Conn) int {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if rc.Control(func(f uintptr) { fd = int(f) }) != nil {
		return -1
	}
	return fd
}

// peekClosed reports whether the peer closed or reset the socket fd: a
// peek that returns end-of-file or an error other than "would block".
// Bytes waiting (a body, a pipelined request) mean the peer is still there.
// It never blocks and never consumes anything, so it is safe beside the
// connection's own reads.
func peekClosed(fd int) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		return false
	case err != nil:
		return true
	}
	return n == 0
}
