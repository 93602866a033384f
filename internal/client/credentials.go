package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// Profile is one server the CLI can talk to and the key it uses there.
type Profile struct {
	URL string `json:"url"`
	Key string `json:"key"`
}

// Credentials is the CLI's credentials file: named profiles and the one in
// use, like kubectl contexts.
type Credentials struct {
	Current  string             `json:"current"`
	Profiles map[string]Profile `json:"profiles"`
}

// ConfigDir is where the CLI keeps its files: $PLINTH_CONFIG_DIR, else
// the user's config directory (~/.config/plinth on Linux).
func ConfigDir() (string, error) {
	if d := os.Getenv("PLINTH_CONFIG_DIR"); d != "" {
		return d, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the config directory (set PLINTH_CONFIG_DIR): %w", err)
	}
	return filepath.Join(base, "plinth"), nil
}

// CredentialsPath is the credentials file's location.
func CredentialsPath() (string, error) {
	dir, err := ConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "credentials.json"), nil
}

// LoadCredentials reads the credentials file; a missing file is empty.
func LoadCredentials() (*Credentials, error) {
	path, err := CredentialsPath()
	if err != nil {
		return nil, err
	}
	creds := &Credentials{Profiles: map[string]Profile{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return creds, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(data, creds); err != nil {
		return nil, fmt.Errorf("%s is not a valid credentials file: %w", path, err)
	}
	if creds.Profiles == nil {
		creds.Profiles = map[string]Profile{}
	}
	return creds, nil
}

// SaveProfile stores a profile, making it current when makeCurrent or when
// no profile is current yet. The file is written whole and renamed into
// place, readable only by its owner.
func SaveProfile(name string, p Profile, makeCurrent bool) (string, error) {
	creds, err := LoadCredentials()
	if err != nil {
		return "", err
	}
	creds.Profiles[name] = p
	if makeCurrent || creds.Current == "" {
		creds.Current = name
	}
	path, err := CredentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	data, _ := json.MarshalIndent(creds, "", "  ")
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return "", fmt.Errorf("writing credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("writing credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("writing credentials: %w", err)
	}
	return path, nil
}

// ProfileNames lists the saved profiles in order.
func (c *Credentials) ProfileNames() []string {
	names := make([]string, 0, len(c.Profiles))
	for n := range c.Profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Resolve picks the server and key for a CLI call: explicit values first,
// then $PLINTH_URL / $PLINTH_API_KEY, then the named (or current) profile.
func Resolve(profile, urlFlag, keyFlag string) (Profile, error) {
	p := Profile{URL: urlFlag, Key: keyFlag}
	if p.URL == "" {
		p.URL = os.Getenv("PLINTH_URL")
	}
	if p.Key == "" {
		p.Key = os.Getenv("PLINTH_API_KEY")
	}
	if p.URL != "" && p.Key != "" {
		return p, nil
	}
	creds, err := LoadCredentials()
	if err != nil {
		return p, err
	}
	if profile == "" {
		profile = os.Getenv("PLINTH_PROFILE")
	}
	if profile == "" {
		profile = creds.Current
	}
	saved, ok := creds.Profiles[profile]
	if profile != "" && !ok {
		return p, fmt.Errorf("no profile %q in the credentials file (have: %v)", profile, creds.ProfileNames())
	}
	if p.URL == "" {
		p.URL = saved.URL
	}
	if p.Key == "" {
		p.Key = saved.Key
	}
	if p.URL == "" {
		return p, errors.New("no Plinth server configured: run `plinth login --url URL --key KEY` (or start one with `plinth up`)")
	}
	return p, nil
}
