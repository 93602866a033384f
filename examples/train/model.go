package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// set is labelled examples: features x[i], label y[i] (0 or 1).
type set struct {
	x [][]float64
	y []float64
}

// data is what training reads and what the run records about it.
type data struct {
	train, test          set
	features             []string
	name, digest, source string
}

// loadData reads --data, or makes the synthetic set from seed. The digest
// is of the training files' bytes (in name order), so for one file it is
// the file's SHA-256, which Plinth's lineage matches to a data version.
func loadData(path string, seed uint64) (*data, error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	d := &data{name: "synthetic", source: fmt.Sprintf("synthetic:seed=%d", seed)}
	h := sha256.New()
	if path == "" {
		raw := synthetic(rng)
		h.Write(raw)
		if err := parseCSV(raw, "synthetic", &d.features, &d.train); err != nil {
			return nil, err
		}
	} else {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		d.name, d.source = filepath.Base(abs), abs
		trainFiles, testFiles := []string{path}, []string(nil)
		if fi, err := os.Stat(path); err != nil {
			return nil, err
		} else if fi.IsDir() {
			// train*.csv and test*.csv if both are there, else all to split.
			trainFiles, _ = filepath.Glob(filepath.Join(path, "train*.csv")) // sorted
			testFiles, _ = filepath.Glob(filepath.Join(path, "test*.csv"))
			if len(trainFiles) == 0 || len(testFiles) == 0 {
				trainFiles, _ = filepath.Glob(filepath.Join(path, "*.csv"))
				testFiles = nil
			}
			if len(trainFiles) == 0 {
				return nil, fmt.Errorf("no *.csv files in %s", path)
			}
		}
		for _, f := range append(trainFiles, testFiles...) {
			raw, err := os.ReadFile(f)
			s := &d.test
			if slices.Contains(trainFiles, f) {
				s = &d.train
				h.Write(raw)
			}
			if err == nil {
				err = parseCSV(raw, f, &d.features, s)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	d.digest = hex.EncodeToString(h.Sum(nil))[:16]
	if len(d.test.y) > 0 {
		return d, nil
	}
	// No test files: hold out a random (seeded) fifth, as rows in a file
	// are often ordered (by time, or by label).
	n := len(d.train.y)
	if n < 2 {
		return nil, fmt.Errorf("%d rows: too few to hold out a test set", n)
	}
	all := d.train
	d.train = set{}
	for k, i := range rng.Perm(n) {
		s := &d.train
		if k < max(1, n/5) {
			s = &d.test
		}
		s.x, s.y = append(s.x, all.x[i]), append(s.y, all.y[i])
	}
	return d, nil
}

// parseCSV adds a file's rows to s. All files must have the header
// *features+label (the first file sets *features).
func parseCSV(raw []byte, name string, features *[]string, s *set) error {
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(recs) < 2 || len(recs[0]) < 2 {
		return fmt.Errorf("%s: want a header and rows with at least one feature and a label", name)
	}
	head := recs[0][:len(recs[0])-1]
	if *features == nil {
		*features = slices.Clone(head)
	} else if !slices.Equal(*features, head) {
		return fmt.Errorf("%s: features %v differ from %v", name, head, *features)
	}
	for line, rec := range recs[1:] {
		row := make([]float64, len(rec))
		for j, v := range rec {
			if row[j], err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil || math.IsNaN(row[j]) || math.IsInf(row[j], 0) {
				return fmt.Errorf("%s:%d: column %d: %q is not a finite number", name, line+2, j+1, v)
			}
		}
		if y := row[len(row)-1]; y != 0 && y != 1 {
			return fmt.Errorf("%s:%d: label %v is not 0 or 1", name, line+2, y)
		}
		s.x, s.y = append(s.x, row[:len(row)-1]), append(s.y, row[len(row)-1])
	}
	return nil
}

// synthetic makes a CSV of 1000 rows and 5 features whose label is a
// noisy linear function of them, so a good model reaches about 90%.
func synthetic(rng *rand.Rand) []byte {
	const rows, feats = 1000, 5
	w := make([]float64, feats)
	for i := range w {
		w[i] = rng.Float64()*4 - 2
	}
	var b bytes.Buffer
	b.WriteString("x1,x2,x3,x4,x5,label\n")
	for range rows {
		z := 0.3 + 0.5*rng.NormFloat64()
		for i := range feats {
			x := math.Round(rng.NormFloat64()*1e4) / 1e4
			z += w[i] * x
			fmt.Fprintf(&b, "%g,", x)
		}
		label := 0
		if z > 0 {
			label = 1
		}
		fmt.Fprintf(&b, "%d\n", label)
	}
	return b.Bytes()
}

// model is logistic regression on standardised features:
// p(y=1|x) = sigmoid(b + sum_j w[j] * (x[j]-mean[j]) / std[j]).
// Standardising makes one learning rate suit features of any scale.
type model struct {
	w, mean, std []float64
	b            float64
	rng          *rand.Rand
}

func newModel(train set, seed uint64) *model {
	k, n := len(train.x[0]), float64(len(train.y))
	m := &model{w: make([]float64, k), mean: make([]float64, k), std: make([]float64, k), rng: rand.New(rand.NewPCG(seed, 2))}
	for j := range k {
		var sum, sq float64
		for _, x := range train.x {
			sum, sq = sum+x[j], sq+x[j]*x[j]
		}
		m.mean[j] = sum / n
		m.std[j] = math.Sqrt(max(sq/n-m.mean[j]*m.mean[j], 0))
		if m.std[j] < 1e-12 { // a constant feature carries nothing; avoid 0/0
			m.std[j] = 1
		}
	}
	return m
}

func (m *model) z(x []float64) float64 {
	z := m.b
	for j, v := range x {
		z += m.w[j] * (v - m.mean[j]) / m.std[j]
	}
	return z
}

// epoch is one pass of mini-batch gradient descent over s in a shuffled
// (seeded, so reproducible) order, on the mean log loss plus l2/2*|w|^2.
func (m *model) epoch(s set, o options) {
	g := make([]float64, len(m.w))
	order := m.rng.Perm(len(s.y))
	for start := 0; start < len(order); start += o.batchSize {
		batch := order[start:min(start+o.batchSize, len(order))]
		clear(g)
		gb := 0.0
		for _, i := range batch {
			e := 1/(1+math.Exp(-m.z(s.x[i]))) - s.y[i]
			for j, v := range s.x[i] {
				g[j] += e * (v - m.mean[j]) / m.std[j]
			}
			gb += e
		}
		n := float64(len(batch))
		for j := range m.w {
			m.w[j] -= o.lr * (g[j]/n + o.l2*m.w[j])
		}
		m.b -= o.lr * gb / n
	}
}

// loss is the mean log loss, computed as softplus(z) - y*z so that large
// |z| neither overflows nor takes log(0).
func (m *model) loss(s set) float64 {
	sum := 0.0
	for i, x := range s.x {
		z := m.z(x)
		sum += max(z, 0) + math.Log1p(math.Exp(-math.Abs(z))) - s.y[i]*z
	}
	return sum / float64(len(s.y))
}

func (m *model) accuracy(s set) float64 {
	right := 0
	for i, x := range s.x {
		if (m.z(x) > 0) == (s.y[i] == 1) {
			right++
		}
	}
	return float64(right) / float64(len(s.y))
}

// export is model.json: enough to score new rows without this program.
func (m *model) export(features []string, metrics map[string]float64) any {
	return map[string]any{"type": "logistic_regression", "n_features": len(m.w), "features": features,
		"weights": m.w, "bias": m.b, "mean": m.mean, "std": m.std, "metrics": metrics,
		"formula": "sigmoid(bias + sum_j weights[j]*(x[j]-mean[j])/std[j])"}
}
