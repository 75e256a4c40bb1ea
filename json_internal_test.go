package refresh

import (
	"bytes"
	"encoding/json"
	"math/big"
	"reflect"
	"strings"
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
	for _, s := range walkObjectSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkWalkObject)
}

var walkObjectSeeds = []string{`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":"\u00e9\"","b":[1,{"c":null}],"d":-0.5e+3}`,
	` {"a" : true } `, `{"a":1}x`, `[1]`, `{"a":01}`, `{"a":"\x01"}`, `{"a\u0000":1,"a\u0000":2}`, `{"a":{"b":1,"b":2}}`,
	`{"uid":9007199254740993,"n":[-0,1E400,{"x":18446744073709551616}],"t":true,"f":false,"z":null,"s":"x"}`}

// eachDamaged calls check with every prefix of each seed, and each seed
// with one byte left out or replaced by one of JSON's structural, escape or
// number bytes: the inputs a scanner's off-by-one errors meet. The fuzz
// targets find such inputs in seconds; this keeps them in every test run.
func eachDamaged(t *testing.T, seeds []string, check func(*testing.T, []byte)) {
	for _, s := range seeds {
		for n := 0; n <= len(s); n++ {
			check(t, []byte(s[:n]))
			if n == len(s) {
				continue
			}
			check(t, []byte(s[:n]+s[n+1:]))
			for _, c := range []byte(`{}[],:" \-+.0eE9tnu`) {
				if c != s[n] {
					check(t, []byte(s[:n]+string(c)+s[n+1:]))
				}
			}
		}
	}
}

// A damaged object is refused (no panic) and what stays valid is read as
// encoding/json reads it.
func TestWalkObjectDamaged(t *testing.T) {
	eachDamaged(t, append(walkObjectSeeds, `{"iss":"https://a.example","aud":["x","y"],"exp":1e3,"cnf":{"jkt":"\/"},"r":[[],{}]}`), checkWalkObject)
}

// checkWalkObject is FuzzWalkObject's oracle.
func checkWalkObject(t *testing.T, data []byte) {
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
	exactly := func(b []byte, v any) error { // encoding/json, numbers as json.Number
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		return d.Decode(v)
	}
	var m map[string]any
	if err := exactly(data, &m); err != nil || len(m) != len(names) {
		t.Fatalf("%q: %d members, encoding/json %d (%v)", data, len(names), len(m), err)
	}
	for name, raw := range values {
		// decodeJSON (the claims Verify hands out) is encoding/json
		// with UseNumber: numbers exact, everything else the same.
		got, err := decodeJSON(raw)
		if err != nil || !reflect.DeepEqual(got, m[name]) {
			t.Fatalf("%q: decodeJSON of member %q (%q) = %#v, %v; encoding/json says %#v", data, name, raw, got, err, m[name])
		}
	}
}

// TestClaimsClone: a clone shares nothing mutable with its original, keeps
// nil as nil, and appending to its Audience cannot write into its Scope.
func TestClaimsClone(t *testing.T) {
	orig := &Claims{Subject: "bob", Audience: []string{"a", "b"}, Scope: []string{"read"},
		Extra: map[string]any{"roles": []any{"user"}, "team": map[string]any{"tags": []any{"x"}}, "n": 1.0}}
	c := orig.clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("clone differs: %+v", c)
	}
	c.Audience = append(c.Audience, "c")
	c.Scope[0] = "write"
	c.Extra["roles"].([]any)[0] = "admin"
	c.Extra["team"].(map[string]any)["tags"].([]any)[0] = "y"
	c.Extra["new"] = true
	want := &Claims{Subject: "bob", Audience: []string{"a", "b"}, Scope: []string{"read"},
		Extra: map[string]any{"roles": []any{"user"}, "team": map[string]any{"tags": []any{"x"}}, "n": 1.0}}
	if !reflect.DeepEqual(orig, want) {
		t.Fatalf("the original changed: %+v", orig)
	}
	if c.Scope[0] != "write" {
		t.Fatalf("appending to Audience wrote into Scope: %v", c.Scope)
	}
	for _, o := range []*Claims{{}, {Audience: []string{}, Scope: []string{}}, {Scope: make([]string, 0, 4)}} {
		c := o.clone()
		if (c.Audience == nil) != (o.Audience == nil) || (c.Scope == nil) != (o.Scope == nil) || c.Extra != nil {
			t.Fatalf("clone of %#v: %#v", o, c)
		}
		if cap(o.Scope) > 0 {
			_ = append(c.Scope, "x")
			if o.Scope[:1][0] == "x" {
				t.Fatalf("appending to an empty clone wrote into the original")
			}
		}
	}
}

// TestDecodeJSONRefusesWhatIsNotOneValue: decodeJSON is given one scanned
// value, but refuses anything else rather than reading part of it.
func TestDecodeJSONRefusesWhatIsNotOneValue(t *testing.T) {
	for _, s := range []string{``, `1x`, `1 2`, `-`, `01`, `{"a":1}x`, `[1] [2]`, `{"a":`, `"x`, `tru`, `nul`} {
		if v, err := decodeJSON(json.RawMessage(s)); err == nil {
			t.Errorf("decodeJSON(%q) = %#v, want an error", s, v)
		}
	}
	deep := func(n int) json.RawMessage {
		return json.RawMessage(strings.Repeat("[", n) + strings.Repeat("]", n))
	}
	if _, err := decodeJSON(deep(maxJSONDepth)); err != nil {
		t.Errorf("%d nested arrays: %v", maxJSONDepth, err)
	}
	if _, err := decodeJSON(deep(maxJSONDepth + 1)); err == nil {
		t.Errorf("%d nested arrays decoded; encoding/json refuses them", maxJSONDepth+1)
	}
	for _, s := range []string{``, `1x`, `{"a":1}x`, `{"a":`, `{"a" 1}`, `[1,]`, `{"a":1,}`, `[`, `{`} {
		if _, err := appendCanonical(nil, []byte(s)); err == nil {
			t.Errorf("appendCanonical(%q) succeeded; decodeJSON refuses it", s)
		}
	}
	if _, err := appendCanonical(nil, deep(maxJSONDepth)); err != nil {
		t.Errorf("appendCanonical of %d nested arrays: %v", maxJSONDepth, err)
	}
	if _, err := appendCanonical(nil, deep(maxJSONDepth+1)); err == nil {
		t.Errorf("appendCanonical took %d nested arrays; decodeJSON refuses them", maxJSONDepth+1)
	}
	for s, want := range map[string]any{`{"a":{"b":1,"b":2}}`: map[string]any{"a": map[string]any{"b": json.Number("2")}},
		`9007199254740993`: json.Number("9007199254740993"), `-1.50e+3`: json.Number("-1.50e+3"),
		`"a"`: "a", `true`: true, `false`: false, `null`: nil, ` [1] `: []any{json.Number("1")}} {
		if v, err := decodeJSON(json.RawMessage(s)); err != nil || !reflect.DeepEqual(v, want) {
			t.Errorf("decodeJSON(%q) = %#v, %v; want %#v", s, v, err, want)
		}
	}
}

// FuzzDecodeJSON: decodeJSON reads what encoding/json reads, numbers as
// json.Number, and refuses the rest without panicking (the claims a store
// returns reach it unvalidated, through Config.OnRefresh).
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range decodeJSONSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkDecodeJSON)
}

var decodeJSONSeeds = []string{`[-]`, `{"a":-}`, `[1,-0.5e+3,"x\\u00e9",true,null,{"b":[]}]`, ` {"a":1} `, `{"a":1,"a":2}`,
	`9007199254740993`, `"\xff"`, `[1,]`, `{"a" 1}`, `01`, `[tru]`, `"\u00"`, "[\"a\x01\"]",
	`{"n":[0,-1.5E+10,2e-3,123456789012345678901234567890],"s":"\\\"\u00e9\/\b\f\n\r\t","f":false}`,
	`["\u00aA\u09fF\ud83d\ude00"]`} // every edge of the hex digits, and a surrogate pair

// A damaged value is refused (no panic), or read as encoding/json reads it.
func TestDecodeJSONDamaged(t *testing.T) { eachDamaged(t, decodeJSONSeeds, checkDecodeJSON) }

// checkDecodeJSON is FuzzDecodeJSON's oracle: decodeJSON reads exactly
// what encoding/json (with UseNumber) reads.
func checkDecodeJSON(t *testing.T, data []byte) {
	got, err := decodeJSON(data)
	if !json.Valid(data) {
		if err == nil {
			t.Fatalf("decodeJSON(%q) = %#v; encoding/json says it is not JSON", data, got)
		}
		return
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var want any
	if derr := d.Decode(&want); derr != nil || err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeJSON(%q) = %#v, %v; encoding/json with UseNumber %#v, %v", data, got, err, want, derr)
	}
}

// canonical is appendCanonical of the JSON text raw, which must be valid.
func canonical(t testing.TB, raw string) string {
	t.Helper()
	b, err := appendCanonical(nil, []byte(raw))
	if err != nil {
		t.Fatalf("appendCanonical(%q): %v", raw, err)
	}
	return string(b)
}

// TestCanonicalJSON: texts of one value encode alike, as a jsonb column
// may rewrite claims; any change of value encodes differently, which is
// what keeps a store writer from editing a session's claims
// (TestVuln28_StoreWriterEscalates).
func TestCanonicalJSON(t *testing.T) {
	same := [][2]string{
		{`{"a":1,"b":[true,null,"x"]}`, `{ "b" : [ true , null , "x" ] , "a" : 1 }`},
		{`{"s":"A<b>&\u00e9"}`, `{"s":"\u0041\u003cb\u003e\u0026é"}`},
		{`{"n":1}`, `{"n":1.0}`}, {`{"n":1}`, `{"n":1e0}`}, {`{"n":1}`, `{"n":10E-1}`},
		{`{"n":10}`, `{"n":1e+000000001}`}, // the longest exponent computed: 10 characters
		{`{"n":100}`, `{"n":1e2}`}, {`{"n":25.0}`, `{"n":2.50E1}`}, {`{"n":0.01}`, `{"n":1e-2}`},
		{`{"n":0}`, `{"n":-0}`}, {`{"n":0}`, `{"n":0.000e5}`}, {`{"n":-12000}`, `{"n":-1.2e+4}`},
		{`{"a":1,"a":2}`, `{"a":2}`}, // the last duplicate wins, as jsonb keeps it
		{`{}`, `{ }`}, {`[]`, `[ ]`},
		{`{"a":{"y":1,"x":[{"q":1,"p":2}]}}`, `{"a":{"x":[{"p":2.0,"q":1}],"y":1}}`}, // nested, reordered at every level
	}
	for _, c := range same {
		if a, b := canonical(t, c[0]), canonical(t, c[1]); a != b {
			t.Errorf("%s and %s are one value but encode as %q and %q", c[0], c[1], a, b)
		}
	}
	differ := [][2]string{
		{`{"uid":9007199254740993}`, `{"uid":9007199254740992}`},
		{`{"n":1}`, `{"n":"1"}`}, {`{"n":1}`, `{"n":-1}`}, {`{"n":10}`, `{"n":1}`}, {`{"n":0.1}`, `{"n":1}`},
		{`{"a":[1,2]}`, `{"a":[2,1]}`}, {`{"a":1}`, `{"a":1,"b":null}`}, {`{"a":null}`, `{}`},
		{`{"a":"x"}`, `{"b":"x"}`}, {`{"a":true}`, `{"a":false}`}, {`{"a":[]}`, `{"a":{}}`},
		{`{"ab":"c"}`, `{"a":"bc"}`}, {`{"a":["b","c"]}`, `{"a":["bc"]}`}, {`{"a":["b"],"c":[]}`, `{"a":["b",[]]}`},
		{`{"roles":["user"]}`, `{"roles":["admin"]}`}, {`{"n":1e99999999999}`, `{"n":1e99999999998}`},
		{`{"a":{"b":1}}`, `{"a":{"b":2}}`}, {`[[1]]`, `[[2]]`}, {`[[1]]`, `[1]`}, {`{"a":[{"x":1}]}`, `{"a":[{"x":1,"y":2}]}`},
		{`{"a":{}}`, `{"a":[]}`}, {`[{}]`, `[[]]`}, {`{"a":{"b":{"c":1}}}`, `{"a":{"b":{"c":1,"d":null}}}`},
	}
	for _, c := range differ {
		if a, b := canonical(t, c[0]), canonical(t, c[1]); a == b {
			t.Errorf("%s and %s are different values but encode alike, %q", c[0], c[1], a)
		}
	}
}

// FuzzCanonicalNumber: two JSON numbers encode alike exactly when they are
// the same rational number (exponents of at most four digits, which
// math/big can afford).
func FuzzCanonicalNumber(f *testing.F) {
	for _, c := range [][2]string{{"1", "1.0"}, {"100", "1e2"}, {"-0", "0"}, {"2.50E1", "25"}, {"0.1", "1e-1"}, {"9007199254740993", "9007199254740992"}, {"1e-5", "0.00001"}, {"12", "1.2"}} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		var ra, rb big.Rat
		for _, n := range []string{a, b} {
			if n == "" || len(n) > 64 {
				return
			}
			if end, err := skipNumber([]byte(n), 0); err != nil || end != len(n) {
				return
			}
			if _, exp, ok := strings.Cut(strings.ToLower(n), "e"); ok && len(strings.TrimLeft(exp, "+-")) > 4 {
				return
			}
		}
		if _, ok := ra.SetString(a); !ok {
			t.Fatalf("big.Rat refuses %q", a)
		}
		if _, ok := rb.SetString(b); !ok {
			t.Fatalf("big.Rat refuses %q", b)
		}
		ca, cb := string(appendNumber(nil, []byte(a))), string(appendNumber(nil, []byte(b)))
		if (ca == cb) != (ra.Cmp(&rb) == 0) {
			t.Fatalf("%q and %q: canonical %q and %q, but as rationals equal=%v", a, b, ca, cb, ra.Cmp(&rb) == 0)
		}
	})
}

// FuzzCanonicalJSON: appendCanonical refuses exactly what decodeJSON
// refuses, and a text written again by encoding/json (members sorted,
// other escapes, indented) encodes alike.
func FuzzCanonicalJSON(f *testing.F) {
	for _, seed := range canonicalJSONSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(checkCanonicalJSON)
}

var canonicalJSONSeeds = []string{`{"a":1,"b":[true,null,"x"]}`, `{"s":"A<b>&\u00e9","n":2.50E1}`, `[1,{"a":{"a":[]}}]`,
	`{"a":1,"a":2}`, `"\ud800"`, `{"roles":["admin"],"uid":9007199254740993}`, `{"a" 1}`, `[1,]`}

// A damaged value is refused by appendCanonical exactly when decodeJSON
// refuses it, and what stays valid encodes as its rewrite does.
func TestCanonicalJSONDamaged(t *testing.T) { eachDamaged(t, canonicalJSONSeeds, checkCanonicalJSON) }

// checkCanonicalJSON is FuzzCanonicalJSON's oracle.
func checkCanonicalJSON(t *testing.T, data []byte) {
	got, err := appendCanonical(nil, data)
	v, derr := decodeJSON(data)
	if (err == nil) != (derr == nil) {
		t.Fatalf("%q: appendCanonical error %v, decodeJSON error %v", data, err, derr)
	}
	if err != nil {
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return // a number encoding/json will not write back
	}
	again, err := appendCanonical(nil, buf.Bytes())
	if err != nil {
		t.Fatalf("%q written again as %q: %v", data, buf.Bytes(), err)
	}
	if !bytes.Equal(got, again) {
		t.Fatalf("%q and %q are one value but encode as %q and %q", data, buf.Bytes(), got, again)
	}
}

// BenchmarkCanonical: the binding's work on claims. "deep" is the worst a
// claims object within MaxTokenSize can nest, every level out of order;
// before nested values were hashed, each level re-read what it held
// (quadratic: 30 ms for 12 KB, 2.4 s for 120 KB).
func BenchmarkCanonical(b *testing.B) {
	for _, c := range []struct{ name, data string }{
		{"claims", `{"roles":["admin","billing"],"tenant":9007199254740993,"org":{"id":7,"name":"acme"}}`},
		{"deep", strings.Repeat(`{"b":1,"a":`, 600) + "1" + strings.Repeat("}", 600)},
	} {
		b.Run(c.name, func(b *testing.B) {
			data := []byte(c.data)
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := appendCanonical(buf[:0], data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestJSONBRefuses: the escapes a Postgres jsonb column refuses to keep
// (checked against Postgres 15: "\u0000 cannot be converted to text",
// "Unicode low surrogate must follow a high surrogate"), read as a decoder
// reads them, after any number of escaped backslashes.
func TestJSONBRefuses(t *testing.T) {
	for text, want := range map[string]bool{
		`{"a":"x"}`:                    false,
		`{"a":"\u0000"}`:               true,
		`{"\u0000":1}`:                 true,
		`["\\u0000"]`:                  false, // a backslash, then the text u0000
		`["\\\u0000"]`:                 true,
		`["\\\\u0000"]`:                false,
		`["\u0001\u00e9\uffff"]`:       false,
		`["\ud83d\ude00"]`:             false, // a pair
		`["\ud800\udc00"]`:             false, // the first pair
		`["\udbff\udfff"]`:             false, // the last pair
		`["\ud800\udbff"]`:             true,  // a high half after a high half
		`["\b0000\bd800"]`:             false, // backspaces before hex digits: no \u escapes
		`["\uD83D\uDE00"]`:             false,
		`["\ud800"]`:                   true, // a high half alone
		`["\ud800x"]`:                  true,
		`["\ud800\u0041"]`:             true,
		`["\ud800\ud800\udc00"]`:       true,
		`["\udc00"]`:                   true, // a low half alone
		`["\ud83d\ude00\udc00"]`:       true,
		`["\ud83d\ude00\u0000"]`:       true,
		`["\\ud800"]`:                  false,
		`["\n\t\"\/\b\f\r\u0020"]`:     false,
		`["\ud83d\ude00\ud83d\ude00"]`: false,
	} {
		if got := jsonbRefuses([]byte(text)); got != want {
			t.Errorf("jsonbRefuses(%s) = %v, want %v", text, got, want)
		}
	}
}

// appendString writes what encoding/json writes for every byte alone and
// between letters (invalid UTF-8 as U+FFFD, <, > and & escaped), and for
// the runes JSON text must or may escape; only \b and \f differ, which
// encoding/json writes short since Go 1.22 and appendString as \u0008 and
// \u000c (both are the same string to every decoder).
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	var in []string
	for c := range 256 {
		in = append(in, string([]byte{byte(c)}), "x"+string([]byte{byte(c)})+"y")
	}
	in = append(in, "\u2028", "\u2029", "\ufffd", "é", "😀", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x80", "a\xffé\x00<", "")
	short := strings.NewReplacer(`\b`, `\u0008`, `\f`, `\u000c`)
	for _, s := range in {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(appendString(nil, s)); got != short.Replace(string(want)) {
			t.Errorf("appendString(%q) = %s, encoding/json %s", s, got, want)
		}
	}
}

// decodeJSONInto takes an object, or null as no object, and refuses every
// other JSON value.
func TestDecodeJSONInto(t *testing.T) {
	for raw, ok := range map[string]bool{`{"a":1}`: true, `{}`: true, `null`: true, `[1]`: false, `"x"`: false, `1`: false, `true`: false, `{`: false} {
		var m map[string]any
		if err := decodeJSONInto([]byte(raw), &m); (err == nil) != ok {
			t.Errorf("decodeJSONInto(%s): %v, want ok=%v", raw, err, ok)
		}
	}
}
