package node

import (
	"io/fs"
	"regexp"
	"testing"
)

// The dashboard's embedded files name no other origin (no CDN, no fonts,
// no analytics): with the CSP, the page works offline and reaches only the
// daemon. And index.html has no inline script or style, which the CSP
// would refuse.
func TestDashboardAssetsSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(`)
	inline := regexp.MustCompile(`(?i)<script>|<script [^>]*>[^<]|<style|\sstyle=|\son[a-z]+=`)
	n := 0
	err := fs.WalkDir(dashboardFiles, "dashboard", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := dashboardFiles.ReadFile(path)
		if err != nil {
			return err
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s names another origin: %q", path, m)
		}
		if path == "dashboard/index.html" {
			if m := inline.Find(b); m != nil {
				t.Errorf("%s has inline code the CSP refuses: %q", path, m)
			}
		}
		return nil
	})
	if err != nil || n < 3 {
		t.Fatalf("walked %d files: %v", n, err)
	}
}
