// Package audit owns the audit log: the names of its events, the Writer that writes
// each as one JSON line through zap and links it into the instance's hash chain
// (chain.go: canonical encoding, heads saved in the store), the bounds on what a field
// may hold (bound.go), and reading logs back for auditors: parsing lines (line.go),
// verifying the chain across files and instances (verify.go), the story of one session
// (story.go) and its HTTP Archive (har.go), and the report with its alerts (report.go).
//
// It knows no session, request or step-up type: the packages that write events pass
// fields. It never reads the clock itself.
package audit
