package svgchart

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Point is one value of a series at x (a round).
type Point struct {
	X int
	Y float64
}

// Series is a named line (or a stack layer).
type Series struct {
	Name   string
	Points []Point
}

// Chart is what a chart says about its axes.
type Chart struct {
	ID     string // the svg element's id
	Title  string
	XLabel string
	YLabel string
	// Zero starts the y axis at 0 (line charts; bars always do).
	Zero bool
	// Empty is what a chart without points says ("no data yet").
	Empty string
}

const (
	width, height          = 640.0, 260.0
	left, right, top, foot = 64.0, 150.0, 28.0, 40.0
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"}

// Color is series i's colour.
func Color(i int) string { return palette[i%len(palette)] }

// Line draws series as lines with a dot per point (empty series are left
// out; a chart with none says so).
func Line(c Chart, series []Series) string {
	var b strings.Builder
	xs, ys := bounds(series, false)
	if c.Zero {
		ys[0] = math.Min(ys[0], 0)
	}
	c.open(&b)
	if len(xs) == 0 {
		return c.empty(&b)
	}
	ax := c.axes(&b, xs, ys, 0)
	for i, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		pts := make([]string, len(s.Points))
		for j, p := range s.Points {
			pts[j] = fmt.Sprintf("%.1f,%.1f", ax.x(p.X), ax.y(p.Y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, Color(i), strings.Join(pts, " "))
		for _, p := range s.Points {
			fmt.Fprintf(&b, `<circle class="point" r="2.5" cx="%.1f" cy="%.1f" fill="%s" data-series="%s" data-x="%d" data-y="%s"><title>%s, round %d: %s</title></circle>`,
				ax.x(p.X), ax.y(p.Y), Color(i), esc(s.Name), p.X, num(p.Y), esc(s.Name), p.X, num(p.Y))
		}
	}
	c.legend(&b, series)
	b.WriteString("</svg>")
	return b.String()
}

// Stacked draws series as stacked bars, one bar per x.
func Stacked(c Chart, series []Series) string {
	var b strings.Builder
	xs, ys := bounds(series, true)
	c.open(&b)
	if len(xs) == 0 {
		return c.empty(&b)
	}
	ax := c.axes(&b, xs, ys, 0.5)
	bw := math.Max(1, math.Min(24, 0.7*(width-left-right)/float64(xs[len(xs)-1]-xs[0]+1)))
	base := map[int]float64{}
	for i, s := range series {
		for _, p := range s.Points {
			y0 := base[p.X]
			base[p.X] = y0 + p.Y
			fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" data-series="%s" data-x="%d" data-y="%s"><title>%s, round %d: %s</title></rect>`,
				ax.x(p.X)-bw/2, ax.y(y0+p.Y), bw, ax.y(y0)-ax.y(y0+p.Y), Color(i), esc(s.Name), p.X, num(p.Y), esc(s.Name), p.X, num(p.Y))
		}
	}
	c.legend(&b, series)
	b.WriteString("</svg>")
	return b.String()
}

func (c Chart) open(b *strings.Builder) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="%s" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, esc(c.ID), width, height, esc(c.Title))
	fmt.Fprintf(b, `<text class="title" x="8" y="16">%s</text>`, esc(c.Title))
}

func (c Chart) empty(b *strings.Builder) string {
	msg := c.Empty
	if msg == "" {
		msg = "no data yet"
	}
	fmt.Fprintf(b, `<text class="empty" x="%.0f" y="%.0f">%s</text></svg>`, left, height/2, esc(msg))
	return b.String()
}

// bounds returns the distinct xs (sorted) and the y range; stacked
// charts range over the sums and start at 0.
func bounds(series []Series, stacked bool) ([]int, [2]float64) {
	seen := map[int]bool{}
	sums := map[int]float64{}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			seen[p.X] = true
			sums[p.X] += p.Y
			lo, hi = math.Min(lo, p.Y), math.Max(hi, p.Y)
		}
	}
	if stacked {
		lo, hi = 0, 0
		for _, v := range sums {
			hi = math.Max(hi, v)
		}
	}
	xs := make([]int, 0, len(seen))
	for x := range seen {
		xs = append(xs, x)
	}
	sort.Ints(xs)
	if hi <= lo {
		lo, hi = lo-1, hi+1
		if stacked {
			lo = 0
		}
	}
	return xs, [2]float64{lo, hi}
}

type axes struct {
	x0, x1 float64
	y0, y1 float64
}

func (a axes) x(v int) float64 {
	if a.x1 == a.x0 {
		return (left + width - right) / 2
	}
	return left + (float64(v)-a.x0)/(a.x1-a.x0)*(width-left-right)
}

func (a axes) y(v float64) float64 {
	return height - foot - (v-a.y0)/(a.y1-a.y0)*(height-top-foot)
}

// axes draws the frame, y ticks at round steps, x ticks at rounds (pad
// rounds of room on either side) and the labels.
func (c Chart) axes(b *strings.Builder, xs []int, ys [2]float64, pad float64) axes {
	step := niceStep((ys[1] - ys[0]) / 4)
	first, last := xs[0], xs[len(xs)-1]
	a := axes{x0: float64(first) - pad, x1: float64(last) + pad, y0: math.Floor(ys[0]/step) * step, y1: math.Ceil(ys[1]/step) * step}
	fmt.Fprintf(b, `<g class="axes" stroke="#999" stroke-width="1"><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f"/></g>`,
		left, top, left, height-foot, left, height-foot, width-right, height-foot)
	for k := 0; a.y0+float64(k)*step <= a.y1+step/2; k++ {
		v := a.y0 + float64(k)*step
		fmt.Fprintf(b, `<text class="tick" x="%.0f" y="%.1f" text-anchor="end">%s</text>`, left-6, a.y(v)+4, tick(v))
	}
	xstep := max(1, (last-first+7)/8)
	for v := first; v <= last; v += xstep {
		fmt.Fprintf(b, `<text class="tick" x="%.1f" y="%.0f" text-anchor="middle">%d</text>`, a.x(v), height-foot+16, v)
	}
	fmt.Fprintf(b, `<text class="label" x="%.0f" y="%.0f" text-anchor="middle">%s</text>`, (left+width-right)/2, height-6, esc(c.XLabel))
	fmt.Fprintf(b, `<text class="label" x="12" y="%.0f" text-anchor="middle" transform="rotate(-90 12 %.0f)">%s</text>`, (top+height-foot)/2, (top+height-foot)/2, esc(c.YLabel))
	return a
}

func (c Chart) legend(b *strings.Builder, series []Series) {
	y := top
	for i, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text class="legend" x="%.0f" y="%.0f">%s</text>`,
			width-right+12, y, Color(i), width-right+26, y+9, esc(s.Name))
		y += 16
	}
}

// niceStep rounds a step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsInf(raw, 0) || math.IsNaN(raw) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// tick writes an axis value briefly: 0.25, 1.5k, 3M.
func tick(v float64) string {
	for _, u := range []struct {
		scale  float64
		suffix string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(v) >= u.scale {
			return strconv.FormatFloat(v/u.scale, 'g', 4, 64) + u.suffix
		}
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// num writes v in the shortest form that reads back as the same float64.
func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func esc(s string) string { return html.EscapeString(s) }
