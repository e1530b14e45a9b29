package gradsync

import (
	"math"
	"testing"
	"time"
)

func TestCloseRule(t *testing.T) {
	s := func(x ...float64) []time.Duration {
		var out []time.Duration
		for _, v := range x {
			out = append(out, time.Duration(v*float64(time.Second)))
		}
		return out
	}
	rule := CloseRule{Core: 0.75, Slack: 0.25, Deadline: time.Minute}
	for _, c := range []struct {
		name     string
		arrivals []time.Duration
		expected int
		at       float64
		admitted int
	}{
		{"all in time: closes at the last", s(10, 11, 12, 12.5), 4, 12.5, 4},
		{"a straggler past the core's quarter", s(10, 11, 12, 16), 4, 15, 3},
		{"order does not matter", s(16, 12, 10, 11), 4, 15, 3},
		{"one missing: the core's time and slack", s(10, 11, 12), 4, 15, 3},
		{"slack capped by the deadline", s(400, 400, 400, 500), 4, 460, 3},
		{"fewer than the core: a deadline after the first", s(10), 4, 70, 1},
		{"nothing arrives", nil, 4, 60, 0},
		{"one expected", s(30), 1, 30, 1},
	} {
		at, n := rule.Close(c.arrivals, c.expected)
		if at != time.Duration(c.at*float64(time.Second)) || n != c.admitted {
			t.Errorf("%s: closes at %v with %d, want %vs with %d", c.name, at, n, c.at, c.admitted)
		}
	}
}

// LinkFloor: half the (upper) median of the known rates; unknown ones
// (0, negative, NaN) left out; a minority claiming huge rates moves it to
// the next honest rate at most.
func TestLinkFloor(t *testing.T) {
	for _, c := range []struct {
		rates []float64
		want  float64
	}{
		{nil, 0},
		{[]float64{0, 0}, 0},
		{[]float64{8}, 4},
		{[]float64{10, 2, 6}, 3},
		{[]float64{10, 2, 6, 4}, 3},
		{[]float64{10, 0, 2, math.NaN(), 6, -1}, 3},
		{[]float64{10, 2, 6, 1e30, 1e30}, 5},
	} {
		if got := LinkFloor(c.rates); got != c.want {
			t.Errorf("LinkFloor(%v) = %v, want %v", c.rates, got, c.want)
		}
	}
}
