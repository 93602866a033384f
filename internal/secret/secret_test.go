package secret

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, _, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal("sk-the-credential", "llm_backends/east/credential")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "sk-the-credential") || !strings.HasPrefix(sealed, "v1:"+k.ID()+":") {
		t.Fatalf("sealed value %q", sealed)
	}
	again, _ := k.Seal("sk-the-credential", "llm_backends/east/credential")
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	got, err := k.Open(sealed, "llm_backends/east/credential")
	if err != nil || got != "sk-the-credential" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if got, err := k.Seal("", "x"); err != nil {
		t.Fatal(err)
	} else if p, err := k.Open(got, "x"); err != nil || p != "" {
		t.Fatalf("empty value: %q %v", p, err)
	}
}

func TestOpenRefusesTampering(t *testing.T) {
	k, _, _ := Generate()
	sealed, _ := k.Seal("sk-the-credential", "ctx")
	i := strings.LastIndex(sealed, ":")
	raw, _ := base64.RawStdEncoding.DecodeString(sealed[i+1:])
	for _, pos := range []int{0, len(raw) / 2, len(raw) - 1} {
		b := append([]byte(nil), raw...)
		b[pos] ^= 1
		bad := sealed[:i+1] + base64.RawStdEncoding.EncodeToString(b)
		if _, err := k.Open(bad, "ctx"); !errors.Is(err, ErrDamaged) {
			t.Errorf("flipped byte %d: err = %v, want ErrDamaged", pos, err)
		}
	}
	if _, err := k.Open(sealed, "other-row"); !errors.Is(err, ErrDamaged) {
		t.Errorf("another context: err = %v, want ErrDamaged", err)
	}
	for _, bad := range []string{"", "sk-plain", "v1:", "v1:" + k.ID() + ":!!!", "v1:" + k.ID() + ":AAAA"} {
		if _, err := k.Open(bad, "ctx"); !errors.Is(err, ErrDamaged) {
			t.Errorf("Open(%q): err = %v, want ErrDamaged", bad, err)
		}
	}
}

func TestOpenWithWrongKey(t *testing.T) {
	k1, _, _ := Generate()
	k2, _, _ := Generate()
	sealed, _ := k1.Seal("sk-the-credential", "ctx")
	_, err := k2.Open(sealed, "ctx")
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("err = %v, want ErrWrongKey", err)
	}
	for _, want := range []string{k1.ID(), k2.ID(), EnvKey} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "sk-the-credential") {
		t.Fatalf("error reveals the secret: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k, created, err := Load("", dir)
	if err != nil || !created {
		t.Fatalf("first Load: %v created=%v", err, created)
	}
	st, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 600", st.Mode().Perm())
	}
	again, created, err := Load("", dir)
	if err != nil || created || again.ID() != k.ID() {
		t.Fatalf("second Load: %v created=%v id %s vs %s", err, created, again.ID(), k.ID())
	}
	sealed, _ := k.Seal("v", "c")
	if v, err := again.Open(sealed, "c"); err != nil || v != "v" {
		t.Fatalf("the reloaded key does not open: %q %v", v, err)
	}

	// The configured key wins over the file.
	_, text, _ := Generate()
	env, created, err := Load(text, dir)
	if err != nil || created || env.ID() == k.ID() {
		t.Fatalf("Load(text): %v created=%v", err, created)
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, _, err := Load(bad, dir); err == nil || !strings.Contains(err.Error(), EnvKey) {
			t.Errorf("Load(%q): %v, want an error naming %s", bad, err, EnvKey)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load("", dir); err == nil || !strings.Contains(err.Error(), FileName) {
		t.Errorf("damaged key file: %v", err)
	}
}
