package svgchart

import (
	"encoding/xml"
	"strconv"
	"strings"
	"testing"
)

type svgDoc struct {
	Circles []struct {
		Series string `xml:"data-series,attr"`
		X      string `xml:"data-x,attr"`
		Y      string `xml:"data-y,attr"`
		CX     string `xml:"cx,attr"`
		CY     string `xml:"cy,attr"`
	} `xml:"circle"`
	Rects []struct {
		Series string `xml:"data-series,attr"`
		X      string `xml:"data-x,attr"`
		Y      string `xml:"data-y,attr"`
		Height string `xml:"height,attr"`
	} `xml:"rect"`
	Texts []string `xml:"text"`
}

func parse(t *testing.T, s string) svgDoc {
	t.Helper()
	var d svgDoc
	if err := xml.Unmarshal([]byte(s), &d); err != nil {
		t.Fatalf("not well-formed SVG: %v\n%s", err, s)
	}
	return d
}

// Every point reads back exactly, with its series; names are escaped;
// higher values sit higher.
func TestLine(t *testing.T) {
	in := []Series{
		{Name: "en", Points: []Point{{0, 6.25}, {1, 5.5}, {2, 0.1 + 0.2}}},
		{Name: `ko"/><script>x</script>`, Points: []Point{{1, 7}}},
		{Name: "empty"},
	}
	s := Line(Chart{ID: "c", Title: "a < b"}, in)
	if strings.Contains(s, "<script>") {
		t.Fatal("a series name was not escaped")
	}
	d := parse(t, s)
	if len(d.Circles) != 4 {
		t.Fatalf("%d points, want 4", len(d.Circles))
	}
	k := 0
	for _, se := range in {
		for _, p := range se.Points {
			c := d.Circles[k]
			k++
			y, _ := strconv.ParseFloat(c.Y, 64)
			if c.Series != se.Name || c.X != strconv.Itoa(p.X) || y != p.Y {
				t.Errorf("point %d: %q x=%s y=%s, want %q %d %v", k, c.Series, c.X, c.Y, se.Name, p.X, p.Y)
			}
		}
	}
	cy := func(i int) float64 { v, _ := strconv.ParseFloat(d.Circles[i].CY, 64); return v }
	if !(cy(0) < cy(1) && cy(3) < cy(0)) { // SVG's y grows downwards
		t.Errorf("drawn heights out of order: %v %v %v", cy(0), cy(1), cy(3))
	}
	for _, txt := range d.Texts {
		if strings.Contains(txt, "empty") {
			t.Error("an empty series has a legend entry")
		}
	}
}

// Bars stack: each layer starts where the one below ends.
func TestStacked(t *testing.T) {
	s := Stacked(Chart{ID: "s"}, []Series{{Name: "a", Points: []Point{{1, 2}, {2, 1}}}, {Name: "b", Points: []Point{{1, 3}}}})
	d := parse(t, s)
	var bars []float64
	for _, r := range d.Rects {
		if r.Series != "" {
			h, _ := strconv.ParseFloat(r.Height, 64)
			bars = append(bars, h)
		}
	}
	if len(bars) != 3 || bars[0] <= 0 || bars[2] <= bars[0] || bars[1] >= bars[0] {
		t.Errorf("bar heights %v: want a(1)=2 < b(1)=3 and a(2)=1 < a(1)", bars)
	}
}

func TestEmpty(t *testing.T) {
	for _, s := range []string{Line(Chart{Empty: "nothing here"}, nil), Stacked(Chart{}, []Series{{Name: "a"}})} {
		d := parse(t, s)
		if len(d.Circles)+len(d.Rects) != 0 {
			t.Errorf("an empty chart draws points: %s", s)
		}
	}
	if !strings.Contains(Line(Chart{Empty: "nothing here"}, nil), "nothing here") {
		t.Error("an empty chart does not say so")
	}
}

func TestTick(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.25: "0.25", 1500: "1.5k", 4e5: "400k", 3e6: "3M", -2e3: "-2k"} {
		if got := tick(v); got != want {
			t.Errorf("tick(%v) = %q, want %q", v, got, want)
		}
	}
}
