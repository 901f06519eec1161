// Package promtext reads a Prometheus text-format scrape, for the tests that check
// what /metrics exports.
package promtext

import (
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is a scrape by metric family name.
type Families map[string]*dto.MetricFamily

// Parse reads a scrape.
func Parse(r io.Reader) (Families, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(r)
}

// Sum adds up the samples of family name (a counter's or gauge's value, a histogram's
// sample count) by the value of label by ("" gives one total under ""), keeping only
// the samples whose labels include match.
func (f Families) Sum(name, by string, match map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.samples(name, match) {
		out[labels(m)[by]] += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	return out
}

// Has reports whether family name has a sample whose labels include match.
func (f Families) Has(name string, match map[string]string) bool {
	return len(f.samples(name, match)) > 0
}

func (f Families) samples(name string, match map[string]string) []*dto.Metric {
	family := f[name]
	if family == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, m := range family.Metric {
		have := labels(m)
		for k, v := range match {
			if have[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.Label))
	for _, l := range m.Label {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
