// Package promtext reads series out of the Prometheus text exposition
// format, what a gateway's /metrics serves, with prometheus/common's
// parser: for each series asked for, the sum of its samples over their
// labels. The load tester and the fleet benchmark use it on scrapes.
//
// It fetches nothing and knows no series of its own; histograms and
// summaries are not read.
package promtext

import (
	"fmt"
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sum parses r and returns, for each of names that r holds as a gauge,
// counter or untyped series, the sum of its samples over their labels. A
// name r lacks is absent from the map. Malformed input is an error.
func Sum(r io.Reader, names ...string) (map[string]float64, error) {
	return SumBy(r, nil, names...)
}

// SumBy is Sum, and for each of names also its samples summed per value
// of each of labels, under the key name{label="value"} (the exposition
// format's own spelling). Series without the labels count only in the
// name's sum.
func SumBy(r io.Reader, labels []string, names ...string) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics text: %w", err)
	}
	out := make(map[string]float64, len(names))
	for _, n := range names {
		fam, ok := fams[n]
		if !ok {
			continue
		}
		for _, m := range fam.GetMetric() {
			v, ok := value(fam.GetType(), m)
			if !ok {
				continue
			}
			out[n] += v
			for _, lp := range m.GetLabel() {
				for _, label := range labels {
					if lp.GetName() == label {
						out[n+"{"+label+"=\""+lp.GetValue()+"\"}"] += v
					}
				}
			}
		}
	}
	return out, nil
}

func value(t dto.MetricType, m *dto.Metric) (float64, bool) {
	switch t {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), m.Gauge != nil
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), m.Counter != nil
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue(), m.Untyped != nil
	}
	return 0, false
}
