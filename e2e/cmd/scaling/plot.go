package main

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plot draws the sweep: throughput against workers (measured with one and
// two routers, and the workers' ideal), and E(N), as two PNGs.
func Plot(rows []Row, throughputPNG, efficiencyPNG string) error {
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
