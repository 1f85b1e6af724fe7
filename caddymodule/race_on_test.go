//go:build race

package caddymodule

// raceDetector tells allocation checks to stand aside: under -race sync.Pool drops items
// at random on purpose, so a pooled buffer or context is sometimes new. .ci/run runs
// them without -race too.
const raceDetector = true
