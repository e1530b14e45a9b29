package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Log lines carry a time and a level in both formats; a bad format or
// level is a usage error.
func TestLogFormats(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	_, errOut, code := fomnet(t, "init", "--home", home)
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  fomnet: initialised `)
	if code != 0 || !line.MatchString(errOut) {
		t.Fatalf("text log %q (exit %d)", errOut, code)
	}
	_, errOut, code = fomnet(t, "init", "--home", filepath.Join(t.TempDir(), "h2"), "--log-format", "json")
	var rec struct{ Time, Level, Msg string }
	if err := json.Unmarshal([]byte(strings.SplitN(errOut, "\n", 2)[0]), &rec); code != 0 || err != nil || rec.Time == "" || rec.Level != "INFO" || !strings.Contains(rec.Msg, "initialised") {
		t.Fatalf("JSON log %q (exit %d): %+v %v", errOut, code, rec, err)
	}
	for _, bad := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}} {
		if _, errOut, code := fomnet(t, append([]string{"id", "--home", home}, bad...)...); code != exitUsage || !strings.Contains(errOut, bad[0]) {
			t.Errorf("%v: exit %d, %q", bad, code, errOut)
		}
	}
	_, errOut, _ = fomnet(t, "id", "--home", home, "--log-level", "error")
	if strings.Contains(errOut, "INFO") {
		t.Errorf("--log-level error still shows %q", errOut)
	}
}

// The text handler writes one line a record: attributes after the
// message, grouped keys dotted, values with spaces quoted.
func TestLineHandler(t *testing.T) {
	var b bytes.Buffer
	l := slog.New(&lineHandler{w: &b, level: slog.LevelInfo}).With("run", "bagu x")
	l.Debug("hidden")
	l.WithGroup("round").Info("phase done", "phase", "train", slog.Group("t", "s", 1.5), "empty", "")
	got := b.String()
	want := ` INFO  phase done run="bagu x" round.phase=train round.t.s=1.5 round.empty=""` + "\n"
	if !strings.HasSuffix(got, want) || strings.Count(got, "\n") != 1 {
		t.Fatalf("got %q, want …%q", got, want)
	}
}
