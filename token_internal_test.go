package refresh

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
)

// TestFoldClaimName: two claim names fold alike exactly when Go's
// encoding/json/v2 matches them case-insensitively (strings.EqualFold once
// '-' and '_' are dropped), which includes every pair encoding/json (v1)
// matches (strings.EqualFold). Every pair of names of up to three runes
// over an alphabet holding the runes that fold into ASCII letters (ſ, the
// Kelvin sign), both dashes and a letter of each case; and every rune with
// the rest of its fold orbit.
func TestFoldClaimName(t *testing.T) {
	t.Parallel()
	strip := strings.NewReplacer("-", "", "_", "")
	alphabet := []string{"s", "S", "ſ", "k", "\u212a", "-", "_", "é", "É"}
	names := []string{""}
	for n, layer := 0, []string{""}; n < 3; n++ {
		var next []string
		for _, p := range layer {
			for _, a := range alphabet {
				next = append(next, p+a)
			}
		}
		names, layer = append(names, next...), next
	}
	folded, stripped := make([]string, len(names)), make([]string, len(names))
	for i, n := range names {
		folded[i], stripped[i] = foldClaimName(n), strip.Replace(n)
	}
	for i, a := range names {
		for j, b := range names {
			same := folded[i] == folded[j]
			if v2 := strings.EqualFold(stripped[i], stripped[j]); same != v2 {
				t.Fatalf("%q and %q: folded alike %v, encoding/json/v2 matches them %v", a, b, same, v2)
			}
			if strings.EqualFold(a, b) && !same {
				t.Fatalf("%q and %q: encoding/json matches them, but they fold apart", a, b)
			}
		}
	}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if unicode.SimpleFold(r) == r {
			continue // alone in its orbit
		}
		f := foldClaimName(string(r))
		for o := unicode.SimpleFold(r); o != r; o = unicode.SimpleFold(o) {
			if g := foldClaimName(string(o)); g != f {
				t.Fatalf("%U folds to %q, %U of its orbit to %q", r, f, o, g)
			}
		}
	}
}

// TestDecodeB64RefusesOutsideTheAlphabet: every byte outside the base64url
// alphabet, put anywhere in a valid value, is refused by both decoders:
// the line breaks that Go's decoder would skip by hasLineBreak, every
// other one ('=' included) by the Strict decoder. And a value of the
// alphabet alone decodes exactly when it is the canonical spelling of
// what it decodes to.
func TestDecodeB64RefusesOutsideTheAlphabet(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for _, raw := range [][]byte{{}, {0xff}, {1, 2}, []byte("any bytes at all"), []byte("thirty-three bytes, not a block!!")} {
		valid := b64.EncodeToString(raw)
		for c := range 256 {
			if strings.IndexByte(alphabet, byte(c)) >= 0 {
				continue
			}
			for _, at := range []int{0, len(valid) / 2, len(valid)} {
				s := valid[:at] + string([]byte{byte(c)}) + valid[at:]
				if _, err := decodeB64(s); err == nil {
					t.Errorf("decodeB64 took byte %#02x at %d of %q", c, at, valid)
				}
				dst := make([]byte, len(s))
				if _, err := decodeB64Into(dst, s); err == nil {
					t.Errorf("decodeB64Into took byte %#02x at %d of %q", c, at, valid)
				}
			}
		}
	}
	// Alphabet only: canonical spellings decode, the others do not.
	for _, s := range []string{"", "A", "AA", "AB", "AAA", "AAB", "AAAA", "_w", "_x", "__8", "__9"} {
		got, err := decodeB64(s)
		canonical := err == nil && b64.EncodeToString(got) == s
		if (err == nil) != canonical {
			t.Errorf("decodeB64(%q) = %x, %v: a non-canonical spelling decoded", s, got, err)
		}
		if want := s == "" || s == "AA" || s == "AAA" || s == "AAAA" || s == "_w" || s == "__8"; (err == nil) != want {
			t.Errorf("decodeB64(%q): err %v, want decoded %v", s, err, want)
		}
	}
}

// numericDateByFloat is numericDate's general path alone, every number
// through strconv.ParseFloat, as it was before whole seconds got their own.
func numericDateByFloat(v []byte) (time.Time, bool) {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f > maxNumericDate || math.IsNaN(f) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
}

// FuzzNumericDate: for every JSON number the scanner takes, numericDate's
// whole-second path decides exactly as parsing it as a float does: the
// same time, or a refusal of both.
func FuzzNumericDate(f *testing.F) {
	for _, s := range []string{"0", "1", "9", "10", "1700000000", "253402300799",
		"253402300800", "999999999999", "1000000000000", "2534023007990",
		"1700000000.5", "1e9", "1E+9", "0.0", "-1", "00", "1700000000 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := []byte(s)
		if len(v) == 0 {
			return
		}
		if end, err := skipNumber(v, 0); err != nil || end != len(v) {
			return // not one JSON number: walkObject never passes it on
		}
		got, err := numericDate(v)
		want, ok := numericDateByFloat(v)
		if (err == nil) != ok || !got.Equal(want) || got.Location() != want.Location() {
			t.Fatalf("numericDate(%q) = %v, %v; by float %v, %v", s, got, err, want, ok)
		}
	})
}
