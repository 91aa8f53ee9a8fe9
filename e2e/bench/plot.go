package bench

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plot draws the sweep: throughput against workers (measured with one and
// two routers, and the workers' ideal), and E(N), as two PNGs.
func ScalingPlot(rows []ScalingRow, throughputPNG, efficiencyPNG string) error {
	var one, two, ideal, eff, eff2 plotter.XYs
	for _, r := range rows {
		x := float64(r.Workers)
		switch r.Routers {
		case 1:
			one = append(one, plotter.XY{X: x, Y: r.ReqPerSec})
			ideal = append(ideal, plotter.XY{X: x, Y: r.IdealReqPerSec})
			eff = append(eff, plotter.XY{X: x, Y: r.Efficiency})
		default:
			two = append(two, plotter.XY{X: x, Y: r.ReqPerSec})
			eff2 = append(eff2, plotter.XY{X: x, Y: r.Efficiency})
		}
	}
	p := plot.New()
	p.Title.Text = "Horizontal scaling: throughput"
	p.X.Label.Text = "sim workers"
	p.Y.Label.Text = "requests/s"
	args := []any{"ideal (every slot busy)", ideal, "measured, 1 router", one}
	if len(two) > 0 {
		args = append(args, "measured, 2 routers", two)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	if err := p.Save(6*vg.Inch, 4*vg.Inch, throughputPNG); err != nil {
		return fmt.Errorf("plot %s: %w", throughputPNG, err)
	}
	q := plot.New()
	q.Title.Text = "Scaling efficiency E(N) = X(N) / (N · X(1))"
	q.X.Label.Text = "sim workers"
	q.Y.Label.Text = "E(N)"
	q.Y.Min, q.Y.Max = 0, 1.1
	eargs := []any{"1 router", eff}
	if len(eff2) > 0 {
		eargs = append(eargs, "2 routers", eff2)
	}
	if err := plotutil.AddLinePoints(q, eargs...); err != nil {
		return err
	}
	if err := q.Save(6*vg.Inch, 4*vg.Inch, efficiencyPNG); err != nil {
		return fmt.Errorf("plot %s: %w", efficiencyPNG, err)
	}
	return nil
}

// Series is one line of a plot.
type Series struct {
	Name string
	XY   plotter.XYs
}

// LinePlot draws series against a shared x axis into a 6×4 inch PNG.
func LinePlot(path, title, xLabel, yLabel string, logX bool, series ...Series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text, p.Y.Label.Text = xLabel, yLabel
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	var args []any
	for _, s := range series {
		if len(s.XY) > 0 {
			args = append(args, s.Name, s.XY)
		}
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	if err := p.Save(6*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// BarPlot draws one bar per label into a 6×4 inch PNG.
func BarPlot(path, title, yLabel string, labels []string, values []float64) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	bars, err := plotter.NewBarChart(plotter.Values(values), vg.Points(30))
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars)
	p.NominalX(labels...)
	if err := p.Save(6*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}
