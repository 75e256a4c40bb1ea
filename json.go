package refresh

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"unicode/utf8"
)

var (
	errDuplicateMember = errors.New("duplicate member")
	errSyntax          = errors.New("malformed JSON")
)

// walkObject calls fn for each member of the JSON object in data, in order,
// with the member's raw value. It refuses anything that is not exactly one
// well-formed object: other JSON values, trailing data, and duplicate member
// names (RFC 8259 leaves their meaning open; RFC 7515 §4 and RFC 7519 §4
// require rejecting them).
//
// It is a small hand-written scanner rather than encoding/json's Decoder
// because it runs on every access-token verification: it allocates only for
// member names with escapes and for nested values, which are validated with
// json.Valid.
//
// The name given to fn is the raw bytes between the quotes when they hold no
// escape (no allocation; fn must not keep it), and the decoded name
// otherwise.
//
// Its cost is linear in len(data): duplicate names are found with a small
// array and, past 16 members, a map. Parsers of input that is not yet
// authenticated also bound the number of members with walkObjectMax.
func walkObject(data []byte, fn func(name []byte, value json.RawMessage) error) error {
	return walkObjectMax(data, 0, fn)
}

// maxHeaderMembers bounds the members of JOSE headers and DPoP proof
// claims, which are parsed before (or, for DPoP, without) any check of who
// sent them. Real ones have fewer than ten.
const maxHeaderMembers = 32

var errTooManyMembers = errors.New("too many members")

// walkObjectMax is walkObject refusing objects of more than max members
// (max <= 0: no limit).
func walkObjectMax(data []byte, max int, fn func(name []byte, value json.RawMessage) error) error {
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return errors.New("not a JSON object")
	}
	i = skipWS(data, i+1)
	var seenBuf [16][]byte
	seen := seenBuf[:0]
	var seenMap map[string]struct{}
	members := 0
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			if i >= len(data) || data[i] != '"' {
				return errSyntax
			}
			end, err := skipString(data, i)
			if err != nil {
				return err
			}
			name := data[i+1 : end-1]
			if bytes.IndexByte(name, '\\') >= 0 || !utf8.Valid(name) {
				decoded, err := stringValue(data[i:end])
				if err != nil {
					return err
				}
				name = []byte(decoded)
			}
			if members++; max > 0 && members > max {
				return errTooManyMembers
			}
			if seenMap == nil {
				for _, n := range seen {
					if bytes.Equal(n, name) {
						return errDuplicateMember
					}
				}
				seen = append(seen, name)
				if len(seen) == cap(seenBuf) {
					// Past a handful of members, a map keeps the check linear.
					seenMap = make(map[string]struct{}, 2*len(seen))
					for _, n := range seen {
						seenMap[string(n)] = struct{}{}
					}
				}
			} else {
				if _, dup := seenMap[string(name)]; dup {
					return errDuplicateMember
				}
				seenMap[string(name)] = struct{}{}
			}
			i = skipWS(data, end)
			if i >= len(data) || data[i] != ':' {
				return errSyntax
			}
			i = skipWS(data, i+1)
			vend, err := skipValue(data, i)
			if err != nil {
				return err
			}
			if err := fn(name, data[i:vend]); err != nil {
				return err
			}
			i = skipWS(data, vend)
			if i >= len(data) {
				return errSyntax
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return errSyntax
			}
			i = skipWS(data, i+1)
		}
	}
	if skipWS(data, i) != len(data) {
		return errors.New("trailing data after JSON object")
	}
	return nil
}

func skipWS(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at data[i] == '"'.
func skipString(data []byte, i int) (int, error) {
	for i++; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			return i + 1, nil
		case c < 0x20:
			return 0, errSyntax
		case c == '\\':
			i++
			if i >= len(data) {
				return 0, errSyntax
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(data) {
					return 0, errSyntax
				}
				for _, h := range data[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return 0, errSyntax
					}
				}
				i += 4
			default:
				return 0, errSyntax
			}
		}
	}
	return 0, errSyntax
}

// skipValue returns the index after the JSON value starting at data[i].
func skipValue(data []byte, i int) (int, error) {
	if i >= len(data) {
		return 0, errSyntax
	}
	switch c := data[i]; {
	case c == '"':
		return skipString(data, i)
	case c == '{' || c == '[':
		// Find the matching bracket, then let encoding/json validate.
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end, err := skipString(data, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					if !json.Valid(data[i : j+1]) {
						return 0, errSyntax
					}
					return j + 1, nil
				}
			}
		}
		return 0, errSyntax
	case c == 't':
		return literal(data, i, "true")
	case c == 'f':
		return literal(data, i, "false")
	case c == 'n':
		return literal(data, i, "null")
	case c == '-' || '0' <= c && c <= '9':
		return skipNumber(data, i)
	}
	return 0, errSyntax
}

func literal(data []byte, i int, lit string) (int, error) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return 0, errSyntax
	}
	return i + len(lit), nil
}

// skipNumber follows the number grammar of RFC 8259 §6.
func skipNumber(data []byte, i int) (int, error) {
	digits := func(i int) int {
		for i < len(data) && '0' <= data[i] && data[i] <= '9' {
			i++
		}
		return i
	}
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && '1' <= data[i] && data[i] <= '9':
		i = digits(i)
	default:
		return 0, errSyntax
	}
	if i < len(data) && data[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, errSyntax
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, errSyntax
		}
		i = j
	}
	return i, nil
}

// stringValue decodes a JSON string value, refusing any other type.
func stringValue(raw json.RawMessage) (string, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", errors.New("not a string")
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// appendString appends s to b as a JSON string.
func appendString(b []byte, s string) []byte {
	return append(appendEscaped(append(b, '"'), s), '"')
}

// appendEscaped appends s to b escaped for the inside of a JSON string.
// Invalid UTF-8 becomes U+FFFD and <, >, & are escaped, as encoding/json
// does.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			if r == utf8.RuneError {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, `\u202`...)
				b = append(b, hex[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

func appendMember(b []byte, name, value string) []byte {
	b = append(b, ',')
	b = appendString(b, name)
	b = append(b, ':')
	return appendString(b, value)
}

func appendIntMember(b []byte, name string, v int64) []byte {
	b = append(b, ',')
	b = appendString(b, name)
	b = append(b, ':')
	return strconv.AppendInt(b, v, 10)
}

// decodeJSON decodes one JSON value into an any as encoding/json does
// (objects as map[string]any, the last of duplicate names winning; arrays
// as []any), except that numbers are json.Number, exactly as written. A
// float64 holds integers exactly only up to 2^53: a 64-bit user or tenant
// id decoded into one becomes a neighbour's id, and re-encoded it stays so.
//
// It is a recursive descent over the scanner's pieces rather than a
// json.Decoder with UseNumber, which costs half as much again as Unmarshal
// on every verification of a token with an array claim.
func decodeJSON(raw []byte) (any, error) {
	v, i, err := parseValue(raw, skipWS(raw, 0), 0)
	if err == nil && skipWS(raw, i) != len(raw) {
		err = errSyntax
	}
	return v, err
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

// parseValue decodes the value at data[i] and returns the index after it.
func parseValue(data []byte, i, depth int) (any, int, error) {
	if i >= len(data) {
		return nil, 0, errSyntax
	}
	switch c := data[i]; {
	case c == '"':
		end, err := skipString(data, i)
		if err != nil {
			return nil, 0, err
		}
		s, err := stringValue(data[i:end])
		return s, end, err
	case c == '-' || '0' <= c && c <= '9':
		end, err := skipNumber(data, i)
		if err != nil {
			return nil, 0, err
		}
		return json.Number(data[i:end]), end, nil
	case c == 't':
		end, err := literal(data, i, "true")
		return true, end, err
	case c == 'f':
		end, err := literal(data, i, "false")
		return false, end, err
	case c == 'n':
		end, err := literal(data, i, "null")
		return nil, end, err
	case c != '{' && c != '[':
		return nil, 0, errSyntax
	}
	if depth++; depth > maxJSONDepth {
		return nil, 0, errSyntax
	}
	closing := byte(']')
	var m map[string]any
	var a []any
	if data[i] == '{' {
		closing, m = '}', make(map[string]any)
	} else {
		a = []any{}
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == closing {
		if m != nil {
			return m, i + 1, nil
		}
		return a, i + 1, nil
	}
	for {
		var name string
		if m != nil {
			if i >= len(data) || data[i] != '"' {
				return nil, 0, errSyntax
			}
			end, err := skipString(data, i)
			if err != nil {
				return nil, 0, err
			}
			if name, err = stringValue(data[i:end]); err != nil {
				return nil, 0, err
			}
			if i = skipWS(data, end); i >= len(data) || data[i] != ':' {
				return nil, 0, errSyntax
			}
			i = skipWS(data, i+1)
		}
		v, end, err := parseValue(data, i, depth)
		if err != nil {
			return nil, 0, err
		}
		if m != nil {
			m[name] = v
		} else {
			a = append(a, v)
		}
		if i = skipWS(data, end); i >= len(data) {
			return nil, 0, errSyntax
		}
		switch data[i] {
		case closing:
			if m != nil {
				return m, i + 1, nil
			}
			return a, i + 1, nil
		case ',':
			i = skipWS(data, i+1)
		default:
			return nil, 0, errSyntax
		}
	}
}

// decodeJSONInto decodes exactly one JSON object from raw into m, numbers
// as json.Number.
func decodeJSONInto(raw []byte, m *map[string]any) error {
	v, err := decodeJSON(raw)
	if err != nil {
		return err
	}
	obj, ok := v.(map[string]any)
	if !ok && v != nil {
		return errors.New("not a JSON object")
	}
	*m = obj
	return nil
}

// cloneJSON deep-copies a value encoding/json decoded into an any: maps and
// slices are copied, the rest (string, float64, bool, json.Number, nil) is
// immutable and shared.
func cloneJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneJSON(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = cloneJSON(e)
		}
		return s
	}
	return v
}

// appendCanonical appends to b an encoding of the JSON text data that is
// the same for every text of the same value and differs for different
// values: object members in name order (the last of duplicate names
// winning, as decodeJSON and jsonb keep it), strings as their bytes,
// numbers by their exact value (appendNumber), arrays and objects closed by
// a marker, and every array or object inside another by the SHA-256 of its
// own encoding, which keeps the work linear in the text however deep it
// nests (encoding nested values inline made each level re-scan or re-copy
// what it holds: quadratic, 2.4 s for 120 KB). Two texts that differ only
// in member order, white space, string escapes or how a number is written
// (1, 1.0, 1e0), as a Postgres jsonb column rewrites them, encode alike.
// It is for hashing, not JSON. It works on the text, allocating only for
// escaped strings, objects of more than 16 members and encodings longer
// than b's capacity, and refuses what decodeJSON refuses.
func appendCanonical(b, data []byte) ([]byte, error) {
	b, i, err := canonValue(b, data, skipWS(data, 0), 0)
	if err == nil && skipWS(data, i) != len(data) {
		err = errSyntax
	}
	return b, err
}

// member is an object member as canonValue has encoded it: its name
// (unescaped) and where its encoding (name and value) lies in the output.
type member struct {
	name       []byte
	start, end int
}

// canonValue appends the canonical encoding of the value at data[i] and
// returns the index after it.
func canonValue(b, data []byte, i, depth int) ([]byte, int, error) {
	if i >= len(data) {
		return b, 0, errSyntax
	}
	switch c := data[i]; {
	case c == '"':
		name, end, err := stringBytes(data, i)
		if err != nil {
			return b, 0, err
		}
		return appendBytes(append(b, 's'), name), end, nil
	case c == '-' || '0' <= c && c <= '9':
		end, err := skipNumber(data, i)
		if err != nil {
			return b, 0, err
		}
		return appendNumber(append(b, 'd'), data[i:end]), end, nil
	case c == 't':
		end, err := literal(data, i, "true")
		return append(b, 't'), end, err
	case c == 'f':
		end, err := literal(data, i, "false")
		return append(b, 'f'), end, err
	case c == 'n':
		end, err := literal(data, i, "null")
		return append(b, 'n'), end, err
	case c != '{' && c != '[':
		return b, 0, errSyntax
	}
	if depth++; depth > maxJSONDepth {
		return b, 0, errSyntax
	}
	if data[i] == '[' {
		b = append(b, 'a')
		i = skipWS(data, i+1)
		if i < len(data) && data[i] == ']' {
			return append(b, ']'), i + 1, nil
		}
		for {
			if i >= len(data) {
				return b, 0, errSyntax
			}
			var err error
			start, first := len(b), data[i]
			if b, i, err = canonValue(b, data, i, depth); err != nil {
				return b, 0, err
			}
			b = hashNested(b, start, first)
			if i = skipWS(data, i); i >= len(data) {
				return b, 0, errSyntax
			}
			switch data[i] {
			case ']':
				return append(b, ']'), i + 1, nil
			case ',':
				i = skipWS(data, i+1)
			default:
				return b, 0, errSyntax
			}
		}
	}
	// An object: encode its members in the order they come, then put the
	// encodings in name order.
	b = append(b, 'o')
	body := len(b)
	var small [16]member
	ms := small[:0]
	sorted := true
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return append(b, '}'), i + 1, nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return b, 0, errSyntax
		}
		name, after, err := stringBytes(data, i)
		if err != nil {
			return b, 0, err
		}
		if i = skipWS(data, after); i >= len(data) || data[i] != ':' {
			return b, 0, errSyntax
		}
		start := len(b)
		b = appendBytes(b, name)
		vstart := len(b)
		if i = skipWS(data, i+1); i >= len(data) {
			return b, 0, errSyntax
		}
		first := data[i]
		if b, i, err = canonValue(b, data, i, depth); err != nil {
			return b, 0, err
		}
		b = hashNested(b, vstart, first)
		if n := len(ms); n > 0 && bytes.Compare(ms[n-1].name, name) >= 0 {
			sorted = false // out of order, or a duplicate name
		}
		ms = append(ms, member{name, start, len(b)})
		if i = skipWS(data, i); i >= len(data) {
			return b, 0, errSyntax
		}
		if data[i] == '}' {
			i++
			break
		}
		if data[i] != ',' {
			return b, 0, errSyntax
		}
		i = skipWS(data, i+1)
	}
	if !sorted {
		// Stable: of equal names the last, which wins, stays last. The
		// members' encodings are copied after the object's, in name order,
		// then moved back: a copy of what this object holds itself (its
		// nested values are hashes).
		slices.SortStableFunc(ms, func(x, y member) int { return bytes.Compare(x.name, y.name) })
		end := len(b)
		for k, m := range ms {
			if k+1 < len(ms) && bytes.Equal(m.name, ms[k+1].name) {
				continue // a duplicate that a later one overrides
			}
			b = append(b, b[m.start:m.end]...)
		}
		b = append(b[:body], b[end:]...)
	}
	return append(b, '}'), i, nil
}

// hashNested replaces the encoding of an array or object, appended to b
// from start, by 'h' and its SHA-256; first is the value's first byte.
func hashNested(b []byte, start int, first byte) []byte {
	if first != '{' && first != '[' {
		return b
	}
	sum := sha256.Sum256(b[start:])
	return append(append(b[:start], 'h'), sum[:]...)
}

// stringBytes returns the value of the JSON string at data[i] and the
// index after it: a slice of data when it holds no escape (and is valid
// UTF-8), else decoded as decodeJSON decodes it.
func stringBytes(data []byte, i int) ([]byte, int, error) {
	end, err := skipString(data, i)
	if err != nil {
		return nil, 0, err
	}
	raw := data[i+1 : end-1]
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return raw, end, nil
	}
	s, err := stringValue(data[i:end])
	return []byte(s), end, err
}

// appendBytes appends s with its length before it.
func appendBytes[S ~string | ~[]byte](b []byte, s S) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendNumber appends a JSON number (valid syntax, as skipNumber checked)
// by its exact value: its significant digits and a power of ten, "-12e3"
// for -12000, 12e3, 1.2e4 and -12000.0 alike; "0" for every zero. An
// exponent too long to add up is kept as written, which only makes that
// number unequal to its other spellings.
func appendNumber(b, n []byte) []byte {
	written := n
	neg := n[0] == '-'
	if neg {
		n = n[1:]
	}
	mant, exp := n, []byte(nil)
	if k := bytes.IndexAny(n, "eE"); k >= 0 {
		mant, exp = n[:k], n[k+1:]
	}
	whole, frac := mant, []byte(nil)
	if k := bytes.IndexByte(mant, '.'); k >= 0 {
		whole, frac = mant[:k], mant[k+1:]
	}
	e := 0
	if exp != nil {
		if len(exp) > 10 {
			return append(append(b, '='), written...) // not computed; kept as written
		}
		x, err := strconv.Atoi(string(exp)) // does not allocate
		if err != nil {
			return append(append(b, '='), written...)
		}
		e = x
	}
	e -= len(frac)
	// The digits are whole then frac; drop leading and trailing zeros.
	digit := func(k int) byte {
		if k < len(whole) {
			return whole[k]
		}
		return frac[k-len(whole)]
	}
	lo, hi := 0, len(whole)+len(frac)
	for lo < hi && digit(lo) == '0' {
		lo++
	}
	if lo == hi {
		return append(b, '0')
	}
	for digit(hi-1) == '0' {
		hi--
		e++
	}
	if neg {
		b = append(b, '-')
	}
	for k := lo; k < hi; k++ {
		b = append(b, digit(k))
	}
	b = append(b, 'e')
	return strconv.AppendInt(b, int64(e), 10)
}

// jsonbRefuses reports whether the JSON text b holds an escape that a
// Postgres jsonb column refuses to keep: \u0000 (a NUL in a string, which
// encoding/json writes so) or a UTF-16 surrogate not in a pair (which a
// json.RawMessage or a MarshalJSON method may write). Backslashes occur
// only in strings, each starting an escape, so one pass from the left reads
// every escape as a decoder does (\\u0000 is a backslash and the text
// u0000).
func jsonbRefuses(b []byte) bool {
	for i := 0; i+1 < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		v, ok := hex4(b, i)
		switch {
		case !ok:
			i++ // a one-character escape
			continue
		case v == 0 || v >= 0xdc00 && v <= 0xdfff:
			return true
		case v >= 0xd800 && v <= 0xdbff:
			if lo, ok := hex4(b, i+6); !ok || lo < 0xdc00 || lo > 0xdfff {
				return true
			}
			i += 6 // the pair's low half
		}
		i += 5
	}
	return false
}

// hex4 reads the escape \uXXXX at b[i:], if there is one.
func hex4(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
	return rune(v), err == nil
}
