//go:build race

package audit

// raceDetector tells allocation tests to stand aside: under -race sync.Pool drops items at
// random on purpose, so zap's pooled buffers are sometimes new and must grow again.
const raceDetector = true
