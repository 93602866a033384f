package endpoint

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports each deployment's desired and ready replicas, read
// from the database when Prometheus scrapes (the gateway exports what it
// routes to; this is what the controller aims for).
type Collector struct {
	svc              *Service
	desired, current *prometheus.Desc
}

// NewCollector returns the collector for s.
func NewCollector(s *Service) *Collector {
	labels := []string{"workspace", "endpoint", "deployment"}
	return &Collector{svc: s,
		desired: prometheus.NewDesc("plinth_endpoint_replicas_desired", "Replicas the controller aims for, per deployment.", labels, nil),
		current: prometheus.NewDesc("plinth_endpoint_replicas_ready", "Replicas of the current generation that are ready, per deployment.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desired
	ch <- c.current
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rows, err := c.svc.db.Read().QueryContext(ctx, `SELECT w.name, e.name, d.name, d.desired,
		(SELECT COUNT(*) FROM replicas r WHERE r.deployment_pk = d.pk AND r.generation = d.generation AND r.state = 'ready')
		FROM deployments d JOIN endpoints e ON e.pk = d.endpoint_pk JOIN workspaces w ON w.id = e.workspace_id`)
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var ws, ep, dep string
		var desired, ready float64
		if rows.Scan(&ws, &ep, &dep, &desired, &ready) != nil {
			return
		}
		ch <- prometheus.MustNewConstMetric(c.desired, prometheus.GaugeValue, desired, ws, ep, dep)
		ch <- prometheus.MustNewConstMetric(c.current, prometheus.GaugeValue, ready, ws, ep, dep)
	}
}
