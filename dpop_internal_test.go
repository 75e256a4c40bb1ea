package refresh

import "testing"

// TestSameURL: htu matches the request's URL after RFC 3986's syntax- and
// scheme-based normalizations (RFC 9449 §4.3 asks servers to apply them),
// and only then.
func TestSameURL(t *testing.T) {
	const req = "https://api.example.com/me/x"
	for _, htu := range []string{
		"https://api.example.com/me/x", "HTTPS://API.Example.COM/me/x", "https://api.example.com:443/me/x",
		"https://api.example.com/%6De/x", "https://api.example.com/%6de/%78", "https://api.example.com/me/x?q=1#f",
	} {
		if !sameURL(htu, req) || !sameURL(req, htu) {
			t.Errorf("%q does not match %q", htu, req)
		}
	}
	for _, htu := range []string{
		"https://api.example.com/me/X", "https://api.example.com/me%2Fx", "https://api.example.com/me/x/",
		"http://api.example.com/me/x", "https://api.example.com:8443/me/x", "https://api.example.com:80/me/x",
		"https://evil.example.com/me/x", "https://user@api.example.com/me/x", "/me/x", "https://api.example.com/me/%zz",
	} {
		if sameURL(htu, req) || sameURL(req, htu) {
			t.Errorf("%q matches %q", htu, req)
		}
	}
	pairs := [][2]string{
		{"https://a.example", "https://a.example/"},
		{"http://a.example:80/t", "http://a.example/t"},
		{"https://[::1]:443/t", "https://[::1]/t"},
		{"https://a.example/%c3%a9", "https://a.example/%C3%A9"},
		{"https://a.example/a%2fb", "https://a.example/a%2Fb"},
	}
	for _, p := range pairs {
		if !sameURL(p[0], p[1]) {
			t.Errorf("%q does not match %q", p[0], p[1])
		}
	}
	if sameURL("http://a.example:443/t", "http://a.example/t") {
		t.Error("port 443 is the default of https only")
	}
}
