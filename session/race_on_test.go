//go:build race

package session

// raceDetector tells allocation checks to stand aside: under -race sync.Pool drops items
// at random on purpose, so a pooled buffer is sometimes new.
const raceDetector = true
