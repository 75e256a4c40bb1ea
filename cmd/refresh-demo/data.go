package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/refreshkit/refresh"
)

// defaultDataDir is where the demo keeps its sessions and keys unless -data
// says otherwise: refresh-demo in the user's cache directory (on Linux
// ~/.cache/refresh-demo), or ./refresh-demo-data without one.
func defaultDataDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "refresh-demo")
	}
	return "refresh-demo-data"
}

// prepareDataDir creates dir if needed and makes it private to the user
// (0700): it holds the signing key, the refresh MAC key and the sessions.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	return nil
}

// secretFile returns the contents of path, a file only its owner may read,
// creating it with make's output (mode 0600) if it does not exist.
// Concurrent starts on one directory agree on one file (O_EXCL).
func secretFile(path string, make func() ([]byte, error)) (data []byte, created bool, err error) {
	for range 2 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			data, err := make()
			if err == nil {
				_, err = f.Write(data)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				_ = os.Remove(path)
				return nil, false, err
			}
			return data, true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, false, err
		}
		fi, err := os.Stat(path)
		if err != nil {
			continue // removed meanwhile: try to create it again
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, false, fmt.Errorf("%s is accessible by other users (mode %04o): chmod 600 it", path, fi.Mode().Perm())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, false, err
		}
		if len(data) == 0 {
			return nil, false, fmt.Errorf("%s is empty: delete it to make a new one", path)
		}
		return data, false, nil
	}
	return nil, false, fmt.Errorf("%s: could not create or read it", path)
}

// persistentSigningKey is the Ed25519 key in dir/signing-key.pem (PKCS#8).
func persistentSigningKey(dir string) (refresh.Key, bool, error) {
	path := filepath.Join(dir, "signing-key.pem")
	data, created, err := secretFile(path, func() ([]byte, error) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	})
	if err != nil {
		return refresh.Key{}, false, err
	}
	k, err := refresh.ParseKeyPEM(data)
	if err != nil {
		return refresh.Key{}, false, fmt.Errorf("%s: %w", path, err)
	}
	return k, created, nil
}

// persistentSecret is the refresh MAC key in dir/refresh-secret (base64).
func persistentSecret(dir string) ([]byte, bool, error) {
	path := filepath.Join(dir, "refresh-secret")
	data, created, err := secretFile(path, func() ([]byte, error) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		return []byte(base64.StdEncoding.EncodeToString(b) + "\n"), nil
	})
	if err != nil {
		return nil, false, err
	}
	mac, _, err := decodeSecret("the refresh secret file", string(trimNewline(data)))
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return mac, created, nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
