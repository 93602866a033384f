package gateway

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"
)

// llmCache is the exact-match response cache of the OpenAI-compatible
// API: answers keyed by model, operation and the request normalised (JSON
// with its keys sorted), kept for the model's CacheTTL, least recently
// used dropped beyond a byte budget.
type llmCache struct {
	mu      sync.Mutex
	items   map[string]*list.Element
	order   *list.List // front = most recent
	bytes   int
	maxSize int
}

type cacheEntry struct {
	contentType string
	body        []byte
}

type cacheItem struct {
	key     string
	e       *cacheEntry
	expires time.Time
}

func newLLMCache(maxBytes int) *llmCache {
	return &llmCache{items: map[string]*list.Element{}, order: list.New(), maxSize: maxBytes}
}

// cacheKey is the SHA-256 of the model, the operation and the normalised
// request; a body that is not JSON is used as it is.
func cacheKey(model, op string, body []byte) string {
	var v any
	norm := body
	if json.Unmarshal(body, &v) == nil {
		if b, err := json.Marshal(v); err == nil {
			norm = b
		}
	}
	h := sha256.New()
	h.Write([]byte(model))
	h.Write([]byte{0})
	h.Write([]byte(op))
	h.Write([]byte{0})
	h.Write(norm)
	return hex.EncodeToString(h.Sum(nil))
}

func (c *llmCache) get(key string, now time.Time) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.items[key]
	if el == nil {
		return nil, false
	}
	it := el.Value.(*cacheItem)
	if !now.Before(it.expires) {
		c.remove(el)
		return nil, false
	}
	c.order.MoveToFront(el)
	return it.e, true
}

func (c *llmCache) put(key string, e *cacheEntry, expires time.Time) {
	size := len(e.body) + len(key)
	if size > c.maxSize/8 {
		return // one answer may not take over the cache
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.items[key]; el != nil {
		c.remove(el)
	}
	c.items[key] = c.order.PushFront(&cacheItem{key: key, e: e, expires: expires})
	c.bytes += size
	for c.bytes > c.maxSize {
		c.remove(c.order.Back())
	}
}

func (c *llmCache) remove(el *list.Element) {
	it := el.Value.(*cacheItem)
	c.order.Remove(el)
	delete(c.items, it.key)
	c.bytes -= len(it.e.body) + len(it.key)
}
