package p2p

import "sync"

// maxReasons bounds the number of distinct reasons a counter keeps: reasons
// come from validators' error texts, which remote peers influence.
const maxReasons = 64

// counter counts events by reason.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func newCounter() *counter { return &counter{m: map[string]int{}} }

func (c *counter) add(reason string) {
	c.mu.Lock()
	if _, ok := c.m[reason]; !ok && len(c.m) >= maxReasons {
		reason = "other"
	}
	c.m[reason]++
	c.mu.Unlock()
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
