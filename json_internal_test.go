package refresh

import (
	"bytes"
	"encoding/json"
	"testing"
)

// duplicateFree reports whether the top-level object in data, which must be
// valid JSON, has no repeated member names, according to encoding/json.
func duplicateFree(data []byte) (isObject, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	t, err := dec.Token()
	if err != nil || t != json.Delim('{') {
		return false, false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return true, false
		}
		name := t.(string)
		if seen[name] {
			return true, false
		}
		seen[name] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return true, false
		}
	}
	return true, true
}

// FuzzWalkObject checks the hand-written scanner against encoding/json: it
// accepts exactly the valid JSON objects without duplicate member names, and
// hands out values that encoding/json decodes to the same thing.
func FuzzWalkObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":"\u00e9\"","b":[1,{"c":null}],"d":-0.5e+3}`,
		` {"a" : true } `, `{"a":1}x`, `[1]`, `{"a":01}`, `{"a":"\x01"}`, `{"a\u0000":1,"a\u0000":2}`, `{"a":{"b":1,"b":2}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var names []string
		values := map[string][]byte{}
		err := walkObject(data, func(nameBytes []byte, v json.RawMessage) error {
			name := string(nameBytes)
			names = append(names, name)
			values[name] = v
			return nil
		})
		isObj, noDup := false, false
		if json.Valid(data) {
			isObj, noDup = duplicateFree(data)
		}
		want := isObj && noDup
		if (err == nil) != want {
			t.Fatalf("walkObject(%q) = %v, encoding/json says valid duplicate-free object: %v", data, err, want)
		}
		if err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil || len(m) != len(names) {
			t.Fatalf("%q: %d members, encoding/json %d (%v)", data, len(names), len(m), err)
		}
		for name, raw := range values {
			var got any
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("%q: value of %q not JSON: %q", data, name, raw)
			}
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(m[name])
			if !bytes.Equal(a, b) {
				t.Fatalf("%q: member %q is %s, encoding/json says %s", data, name, a, b)
			}
		}
	})
}
