package tokens

import "math"

// noRank marks a pair of parts that is not a token and so never merges.
const noRank = math.MaxUint32

// linearMax is the longest piece merged by the quadratic scan. Nearly all
// pieces are shorter, and for them a scan over a few dozen ranks beats a
// heap; longer ones (a word of base64, a run of one character) go to
// heapCount so that a hostile request cannot cost time quadratic in its size.
const linearMax = 64

// rank returns the rank of token t, or noRank if t is not a token.
func (e *Encoding) rank(t string) uint32 {
	if len(t) > e.maxLen {
		return noRank
	}
	if r, ok := e.ranks[t]; ok {
		return r
	}
	return noRank
}

// pairIndex is the index in Encoding.pairs of the two bytes at s[i:].
func pairIndex(s string, i int) int { return int(s[i])<<8 | int(s[i+1]) }

// mergeCount returns how many tokens tiktoken's byte-pair merge leaves of
// piece: starting from single bytes, it repeatedly merges the adjacent pair
// whose concatenation has the lowest rank (the leftmost such pair on a tie)
// until no adjacent pair is a token.
func (e *Encoding) mergeCount(piece string) int {
	switch {
	case len(piece) < 2:
		return len(piece)
	case len(piece) > linearMax:
		return e.heapCount(piece)
	}
	return e.linearCount(piece)
}

// linearCount is mergeCount for pieces of 2 to linearMax bytes: the direct
// algorithm, rescanning every pair's rank after each merge, in arrays on the
// stack.
func (e *Encoding) linearCount(piece string) int {
	// bound[i] is where part i starts; bound[m-1] is len(piece). pair[i] is
	// the rank of parts i and i+1 together.
	var boundBuf [linearMax + 1]int
	var pairBuf [linearMax]uint32
	m := len(piece) + 1
	bound, pair := boundBuf[:m], pairBuf[:m-1]
	for i := range bound {
		bound[i] = i
	}
	for i := 0; i+2 < m; i++ {
		pair[i] = e.pairs[pairIndex(piece, i)]
	}
	for {
		best, at := uint32(noRank), -1
		for i, r := range pair[:m-2] {
			if r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			return m - 1
		}
		// Merge parts at and at+1: boundary at+1 goes.
		copy(bound[at+1:m-1], bound[at+2:m])
		copy(pair[at+1:m-2], pair[at+2:m-1])
		m--
		if at+2 < m {
			pair[at] = e.rank(piece[bound[at]:bound[at+2]])
		} else {
			pair[at] = noRank
		}
		if at > 0 {
			pair[at-1] = e.rank(piece[bound[at-1]:bound[at+1]])
		}
	}
}

// candidate is a pair of adjacent parts in heapCount: the parts starting at
// start and ending at end, whose concatenation has rank rank.
type candidate struct {
	rank       uint32
	start, end int32
}

func (a candidate) before(b candidate) bool {
	return a.rank < b.rank || a.rank == b.rank && a.start < b.start
}

// heapCount is mergeCount for long pieces: the same merges in the same order,
// in O(n log n). Parts form a linked list by their start offsets, and the
// heap holds candidate pairs keyed by (rank, start), so the first valid pop
// is the lowest-ranked, leftmost pair. A candidate goes stale when either of
// its parts merges with something else; since a part only ever grows, a
// candidate is current exactly when its start still begins a part and the
// part after that one still ends at its end.
func (e *Encoding) heapCount(piece string) int {
	n := len(piece)
	next := make([]int32, n) // next[i]: start of the part after the part at i (n at the end)
	prev := make([]int32, n) // prev[i]: start of the part before the part at i (-1 at the start)
	alive := make([]bool, n) // alive[i]: a part starts at i
	heap := make([]candidate, 0, n)
	for i := 0; i < n; i++ {
		next[i], prev[i], alive[i] = int32(i+1), int32(i-1), true
	}
	end := func(i int32) int32 { // end of the pair starting at part i, or -1
		j := next[i]
		if int(j) >= n {
			return -1
		}
		return next[j]
	}
	push := func(i int32) {
		if j := end(i); j >= 0 {
			if r := e.rank(piece[i:j]); r != noRank {
				heap = heapPush(heap, candidate{r, i, j})
			}
		}
	}
	for i := 0; i < n-1; i++ {
		if r := e.pairs[pairIndex(piece, i)]; r != noRank {
			heap = append(heap, candidate{r, int32(i), int32(i + 2)})
		}
	}
	// Heapify: sift down every parent, from the last one up.
	for i := len(heap)/2 - 1; i >= 0; i-- {
		siftDown(heap, i)
	}
	parts := n
	for len(heap) > 0 {
		var c candidate
		c, heap = heapPop(heap)
		if !alive[c.start] || end(c.start) != c.end {
			continue
		}
		j := next[c.start] // the right part, merged into the left
		alive[j] = false
		next[c.start] = next[j]
		if int(next[j]) < n {
			prev[next[j]] = c.start
		}
		parts--
		push(c.start)
		if p := prev[c.start]; p >= 0 {
			push(p)
		}
	}
	return parts
}

func heapPush(h []candidate, c candidate) []candidate {
	h = append(h, c)
	i := len(h) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h[i].before(h[parent]) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
	return h
}

func heapPop(h []candidate) (candidate, []candidate) {
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	siftDown(h, 0)
	return top, h
}

// siftDown moves h[i] down to where it belongs below.
func siftDown(h []candidate, i int) {
	for {
		l, smallest := 2*i+1, i
		if l < len(h) && h[l].before(h[smallest]) {
			smallest = l
		}
		if r := l + 1; r < len(h) && h[r].before(h[smallest]) {
			smallest = r
		}
		if smallest == i {
			break
		}
		h[i], h[smallest] = h[smallest], h[i]
		i = smallest
	}
}
