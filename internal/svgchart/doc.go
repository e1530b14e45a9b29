// Package svgchart draws the dashboard's charts as SVG on the server: line
// charts (loss curves) and stacked bars (phase timelines, bytes per round).
//
// Written here rather than taken from npm: the dashboard must work offline
// and with the page's network access limited to the daemon, and what it
// draws is a few series of at most a few thousand points. Drawing them in
// Go keeps the page free of a charting library (and its licence and
// updates), lets Go tests check every point, and gives a follower the same
// chart whether it watched the run or mirrored it afterwards. Every point
// carries its values in data- attributes, so a test (or a script) reads
// the chart back exactly.
package svgchart
