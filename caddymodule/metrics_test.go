package caddymodule

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestCountRequestByStatusClass(t *testing.T) {
	const role = "metrics-test-role"
	for _, tt := range []struct {
		status int
		class  string
	}{
		{101, "1xx"},
		{200, "2xx"},
		{204, "2xx"},
		{302, "3xx"},
		{404, "4xx"},
		{503, "5xx"},
		{0, "other"},
		{99, "other"},
		{600, "other"},
	} {
		counter := jitMetrics.requests.WithLabelValues(role, tt.class)
		before := counterValue(t, counter)
		countRequest(role, tt.status)
		countRequest(role, tt.status)
		if got := counterValue(t, counter) - before; got != 2 {
			t.Errorf("status %d: %s counted %v, want 2", tt.status, tt.class, got)
		}
	}
	// Each role has its own counters.
	other := jitMetrics.requests.WithLabelValues("metrics-test-other-role", "2xx")
	before := counterValue(t, other)
	countRequest(role, 200)
	if got := counterValue(t, other) - before; got != 0 {
		t.Fatalf("another role's 2xx counted %v", got)
	}
}
