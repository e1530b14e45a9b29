package kernels

import (
	"math"
	"testing"
)

func TestScheduleKnownValues(t *testing.T) {
	cos := Schedule{Kind: ScheduleCosine, MaxLR: 1, MinLR: 0.1, Warmup: 4, Total: 14}
	wsd := Schedule{Kind: ScheduleWSD, MaxLR: 1, MinLR: 0, Warmup: 2, Total: 12, DecayFrac: 0.25}
	for _, tc := range []struct {
		s    Schedule
		step int
		want float64
	}{
		{cos, 0, 0.25}, {cos, 3, 1}, // linear warmup to the peak
		{cos, 4, 1},                             // decay starts at the peak
		{cos, 13, 0.1},                          // ends at the floor
		{cos, 8, -1},                            // 4/9 of the way: computed below
		{wsd, 0, 0.5}, {wsd, 1, 1}, {wsd, 8, 1}, // stable until 12-3 = 9
		{wsd, 9, 1}, {wsd, 10, 0.5}, {wsd, 11, 0}, // linear decay over the last 3 steps
		{wsd, 50, 0},
		{Schedule{Kind: ScheduleConstant, MaxLR: 2, Total: 5}, 3, 2},
	} {
		got := tc.s.LR(tc.step)
		want := tc.want
		if tc.s.Kind == ScheduleCosine && tc.step == 8 {
			want = 0.1 + 0.45*(1+math.Cos(math.Pi*4/9))
		}
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("%s step %d: lr %v, want %v", tc.s.Kind, tc.step, got, want)
		}
		if err := tc.s.Validate(); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []Schedule{
		{Kind: "step", MaxLR: 1, Total: 1},
		{Kind: ScheduleCosine, MaxLR: 0, Total: 1},
		{Kind: ScheduleCosine, MaxLR: 1, MinLR: 2, Total: 1},
		{Kind: ScheduleCosine, MaxLR: 1, Total: 0},
		{Kind: ScheduleCosine, MaxLR: 1, Warmup: 5, Total: 4},
		{Kind: ScheduleWSD, MaxLR: 1, Total: 4, DecayFrac: 1.5},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
