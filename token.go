package refresh

// Access tokens (RFC 9068): their claims, how the Issuer signs them
// (signAccess) and verifies them (Verify, verifyAccess, parseClaims). Keys are
// in keys.go, the cache of verified tokens in verify_cache.go.

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// Claims are the claims of a verified access token (RFC 9068 §2.2). Each
// one Verify, a Verifier or the middleware returns is the caller's own deep
// copy, even when it comes from the cache of verified tokens
// (Config.VerifyCacheSize): changing it changes no other request's. Its
// times are in UTC.
type Claims struct {
	Issuer    string    // iss
	Subject   string    // sub
	Audience  []string  // aud
	ExpiresAt time.Time // exp
	IssuedAt  time.Time // iat: when this token was minted (every refresh mints one)
	// AuthTime is auth_time (RFC 9068 §2.2.1): when the user signed in,
	// that is when Issue started the session, to the second. Refreshes keep
	// it: a token minted from a refresh token a day later still says when
	// the user last proved who they are, which IssuedAt does not. Zero when
	// absent. RequireRecentAuth guards routes with it (RFC 9470).
	AuthTime  time.Time
	NotBefore time.Time // nbf; zero when absent
	ID        string    // jti, unique per token
	ClientID  string    // client_id
	SessionID string    // sid: the session (token family) the token belongs to
	Scope     []string  // scope, split on spaces
	// DPoPKey is cnf.jkt: the thumbprint of the DPoP key the token is bound
	// to (RFC 9449 §6.1), or "" for a bearer token.
	DPoPKey string
	// Extra holds the application's own claims, decoded as encoding/json
	// decodes into an any, except that numbers are json.Number, exactly as
	// signed: a float64 holds integers exactly only up to 2^53, and a
	// 64-bit id rounded to one is another user's or tenant's id. Read them
	// with its Int64, Float64 or String methods.
	Extra map[string]any
}

// clone returns a deep copy of c: nothing it holds, down to the values in
// Extra, is shared with c. Audience and Scope share one allocation, each
// capped so that appending to one cannot write into the other.
func (c *Claims) clone() *Claims {
	cp := *c
	if na, n := len(c.Audience), len(c.Audience)+len(c.Scope); n > 0 {
		buf := make([]string, n)
		copy(buf, c.Audience)
		copy(buf[na:], c.Scope)
		if c.Audience != nil {
			cp.Audience = buf[:na:na]
		}
		if c.Scope != nil {
			cp.Scope = buf[na:n:n]
		}
	} else {
		cp.Audience, cp.Scope = c.Audience[:0:0], c.Scope[:0:0] // nil stays nil
	}
	if c.Extra != nil {
		cp.Extra = cloneJSON(c.Extra).(map[string]any)
	}
	return &cp
}

// HasScope reports whether the token was granted scope.
func (c *Claims) HasScope(scope string) bool { return slices.Contains(c.Scope, scope) }

// Roles returns the strings of the "roles" claim (an array of strings or a
// single string), or of the "role" claim when there is no "roles".
func (c *Claims) Roles() []string {
	v, ok := c.Extra["roles"]
	if !ok {
		v = c.Extra["role"]
	}
	switch r := v.(type) {
	case string:
		return []string{r}
	case []any:
		out := make([]string, 0, len(r))
		for _, x := range r {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// HasRole reports whether role is among Roles.
func (c *Claims) HasRole(role string) bool { return slices.Contains(c.Roles(), role) }

// reservedClaims are the names the Issuer writes, which the application
// may not set, keyed by foldClaimName.
var reservedClaims = func() map[string]string {
	m := make(map[string]string)
	for _, name := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "sid", "scope", "cnf", "auth_time"} {
		m[foldClaimName(name)] = name
	}
	return m
}()

// foldClaimName folds a claim name the way Go's encoding/json matches
// object members to struct fields: case-insensitively under Unicode simple
// folding (so "SUB", "Sub" and "ſub", with U+017F, all fill a field tagged
// "sub"; the last member wins), and, as encoding/json/v2 does in its
// case-insensitive mode, ignoring '-' and '_'. golang-jwt's
// RegisteredClaims, and every resource server that decodes a payload into
// a struct, read names so.
func foldClaimName(name string) string {
	b := make([]byte, 0, len(name))
	for _, r := range name {
		switch {
		case r == '-' || r == '_':
			continue
		case 'a' <= r && r <= 'z':
			r -= 'a' - 'A'
		case r >= utf8.RuneSelf:
			// The smallest rune of r's fold orbit stands for all of it.
			for {
				f := unicode.SimpleFold(r)
				if f <= r {
					r = f
					break
				}
				r = f
			}
		}
		b = utf8.AppendRune(b, r)
	}
	return string(b)
}

// encodeClaims validates application claims and returns them as a JSON
// object, or nil when there are none. It refuses a name that is a
// registered claim's to Go's encoding/json (foldClaimName), not only the
// registered name itself: the claims follow the Issuer's own members in
// the token, so {"sub":"alice",…,"SUB":"bob"} verifies here as alice's
// and decodes as bob's in a resource server reading a struct (finding 36).
// Two names that are one to it are refused for the same reason.
func encodeClaims(m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	seen := make(map[string]string, len(m))
	for name := range m {
		f := foldClaimName(name)
		if reg, ok := reservedClaims[f]; ok {
			if name == reg {
				return nil, fmt.Errorf("%w: claim %q is reserved and set by the Issuer", ErrInvalidRequest, name)
			}
			return nil, fmt.Errorf("%w: claim %q is the reserved %q to decoders matching names case-insensitively (Go's encoding/json)", ErrInvalidRequest, name, reg)
		}
		if other, ok := seen[f]; ok {
			return nil, fmt.Errorf("%w: claims %q and %q are one claim to decoders matching names case-insensitively (Go's encoding/json)", ErrInvalidRequest, min(name, other), max(name, other))
		}
		seen[f] = name
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %w", ErrInvalidRequest, err)
	}
	return b, nil
}

var b64 = base64.RawURLEncoding

// b64Strict is b64 refusing non-zero bits after the last byte, so that
// each value has one spelling.
var b64Strict = b64.Strict()

var errNotB64URL = errors.New("not canonical unpadded base64url")

// hasLineBreak reports whether s holds '\r' or '\n': the two bytes outside
// the alphabet that Go's base64 decoders skip (even in Strict mode) instead
// of refusing.
func hasLineBreak(s string) bool {
	return strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0
}

// decodeB64 decodes canonical unpadded base64url, refusing every byte
// outside the alphabet: line breaks first, which the decoder would skip and
// so give one token many spellings (each passing every check, each taking
// its own cache slot), then every other one, '=' included, in the decoder
// itself (TestDecodeB64RefusesOutsideTheAlphabet tries all 256 bytes).
func decodeB64(s string) ([]byte, error) {
	if hasLineBreak(s) {
		return nil, errNotB64URL
	}
	return b64Strict.DecodeString(s)
}

// decodeB64Into is decodeB64 into dst, which must be large enough.
func decodeB64Into(dst []byte, s string) (int, error) {
	if hasLineBreak(s) {
		return 0, errNotB64URL
	}
	return b64Strict.Decode(dst, []byte(s))
}

// decodeB64Exact decodes s into dst and reports whether s is exactly
// len(dst) bytes in canonical unpadded base64url: the fixed-size values of
// this package (session ids, thumbprints, nonces).
func decodeB64Exact(dst []byte, s string) bool {
	if len(s) != b64.EncodedLen(len(dst)) {
		return false
	}
	n, err := decodeB64Into(dst, s)
	return err == nil && n == len(dst)
}

// accessInput is what one access token says.
type accessInput struct {
	subject, clientID, sessionID string
	scope                        []string
	claims                       []byte    // JSON object or nil
	jkt                          string    // DPoP key thumbprint, or ""
	authTime                     time.Time // the session's start (auth_time), or zero
	sessionEnd                   time.Time // the session's absolute end, which exp never passes; zero: none
}

// signAccess mints an access token. The claims JSON is appended directly,
// without reflection; the header is encoded once per key.
func (iss *Issuer) signAccess(in *accessInput, now time.Time) (string, time.Time, error) {
	k := iss.signer
	exp := now.Add(iss.cfg.AccessTTL).Unix()
	if end := in.sessionEnd.Unix(); !in.sessionEnd.IsZero() && end < exp {
		exp = end // a session's last token ends with it (Config.SessionTTL)
	}
	var jti [16]byte
	newJTI(&jti)

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	p := (*bp)[:0]
	p = append(p, `{"iss":`...)
	p = appendString(p, iss.cfg.Issuer)
	p = appendMember(p, "sub", in.subject)
	p = appendMember(p, "aud", iss.cfg.Audience)
	p = appendIntMember(p, "exp", exp)
	p = appendIntMember(p, "iat", now.Unix())
	if at := in.authTime.Unix(); !in.authTime.IsZero() && at >= 0 {
		p = appendIntMember(p, "auth_time", at)
	}
	p = append(p, `,"jti":"`...)
	p = b64.AppendEncode(p, jti[:])
	p = append(p, '"')
	clientID := in.clientID
	if clientID == "" {
		clientID = iss.cfg.ClientID
	}
	p = appendMember(p, "client_id", clientID)
	p = appendMember(p, "sid", in.sessionID)
	if len(in.scope) > 0 {
		p = append(p, `,"scope":"`...)
		for i, sc := range in.scope {
			if i > 0 {
				p = append(p, ' ')
			}
			p = appendEscaped(p, sc)
		}
		p = append(p, '"')
	}
	if in.jkt != "" {
		p = append(p, `,"cnf":{"jkt":`...)
		p = appendString(p, in.jkt)
		p = append(p, '}')
	}
	if len(in.claims) > 2 { // more than "{}"
		p = append(p, ',')
		p = append(p, in.claims[1:]...) // members and the closing brace
	} else {
		p = append(p, '}')
	}
	// The token is assembled after the payload in the same buffer.
	start := len(p)
	tok := append(p, k.header...)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, p[:start])
	signed := tok[start:]
	if k.hmac {
		m := k.macs.Get().(*hmacState)
		m.h.Reset()
		m.h.Write(signed)
		tok = append(tok, '.')
		tok = b64.AppendEncode(tok, m.h.Sum(m.sum[:0]))
		k.macs.Put(m)
	} else {
		sig, err := jwsbb.Sign(k.sign, string(k.alg), signed, nil)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("refresh: sign access token: %w", err)
		}
		tok = append(tok, '.')
		tok = b64.AppendEncode(tok, sig)
	}
	*bp = tok
	return string(tok[start:]), time.Unix(exp, 0).In(now.Location()), nil
}

// jtiBatch is crypto/rand output that newJTI hands out 16 bytes at a time.
type jtiBatch struct {
	buf  [256]byte
	left int // unused bytes at the end of buf
}

// jtiPool holds per-P batches: one crypto/rand read per 16 access tokens,
// and no state shared between cores (crypto/rand's every call touches a
// shared atomic, which two cores minting tokens fight over). A batch is
// owned by one caller between Get and Put and its bytes are consumed before
// it goes back, so no jti is handed out twice.
var jtiPool = sync.Pool{New: func() any { return new(jtiBatch) }}

// newJTI fills id with 16 fresh random bytes.
func newJTI(id *[16]byte) {
	b := jtiPool.Get().(*jtiBatch)
	if b.left == 0 {
		_, _ = rand.Read(b.buf[:]) // never fails (Go 1.24+); crashes the program otherwise
		b.left = len(b.buf)
	}
	b.left -= len(id)
	copy(id[:], b.buf[b.left:])
	jtiPool.Put(b)
}

// bufPool holds scratch buffers for minting access tokens.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func audienceValue(v json.RawMessage) ([]string, error) {
	if len(v) > 0 && v[0] == '"' {
		s, err := stringValue(v)
		return []string{s}, err
	}
	if len(v) == 0 || v[0] != '[' {
		return nil, errors.New("aud is neither string nor array")
	}
	var out []string
	err := json.Unmarshal(v, &out)
	return out, err
}

// maxNumericDate is 9999-12-31T23:59:59Z; later dates are refused.
const maxNumericDate = 253402300799

var errBadNumericDate = errors.New("bad NumericDate")

// numericDate decodes a NumericDate (RFC 7519 §2): a non-negative JSON
// number of seconds, possibly fractional. Strings, negatives and values
// past year 9999 are refused.
func numericDate(v json.RawMessage) (time.Time, error) {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return time.Time{}, errors.New("NumericDate is not a non-negative number")
	}
	if len(v) <= len("253402300799") {
		// Whole seconds, as issuers write them: no float parsing. The
		// scanner has checked the number's grammar; whatever is not all
		// digits here (a fraction, an exponent) takes the general path.
		var sec int64
		for _, c := range v {
			if c < '0' || c > '9' {
				sec = -1
				break
			}
			sec = sec*10 + int64(c-'0')
		}
		switch {
		case sec > maxNumericDate:
			return time.Time{}, errBadNumericDate
		case sec >= 0:
			return time.Unix(sec, 0).UTC(), nil
		}
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f > maxNumericDate || math.IsNaN(f) {
		return time.Time{}, errBadNumericDate
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}
