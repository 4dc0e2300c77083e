package experiment

import (
	"net/url"
	"slices"
)

// Limits of "notify".
const (
	// MaxNotifyURLs bounds the URLs of one experiment: each is a delivery
	// of each of its events.
	MaxNotifyURLs = 5
	// MaxNotifyURLBytes bounds one URL.
	MaxNotifyURLBytes = 2048
)

// decodeNotify reads the optional top-level "notify": an array of http(s)
// URLs with a host, no credentials and no fragment. Whether the deployment
// lets them be named (allowNotify) is checked later, before the claim.
func decodeNotify(top map[string]any) ([]string, error) {
	raw, ok := top["notify"]
	if !ok {
		return nil, nil
	}
	arr, ok := raw.([]any)
	if !ok {
		return nil, inputErrorf(`"notify" must be an array of URLs, got %s`, jsonKind(raw))
	}
	if len(arr) == 0 {
		return nil, inputErrorf(`"notify" is empty: list URLs, or leave "notify" out`)
	}
	if len(arr) > MaxNotifyURLs {
		return nil, inputErrorf(`"notify" lists %d URLs; at most %d`, len(arr), MaxNotifyURLs)
	}
	urls := make([]string, 0, len(arr))
	for i, v := range arr {
		s, ok := v.(string)
		if !ok {
			return nil, inputErrorf(`"notify"[%d] must be a string, got %s`, i, jsonKind(v))
		}
		if err := ValidateNotifyURL(s); err != nil {
			return nil, inputErrorf(`"notify"[%d]: %v`, i, err)
		}
		if slices.Contains(urls, s) {
			return nil, inputErrorf(`"notify"[%d] repeats an earlier URL`, i)
		}
		urls = append(urls, s)
	}
	return urls, nil
}

// ValidateNotifyURL checks the form of a notify URL.
func ValidateNotifyURL(s string) error {
	if len(s) > MaxNotifyURLBytes {
		return inputErrorf("the URL is %d bytes; at most %d", len(s), MaxNotifyURLBytes)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return inputErrorf("not a URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return inputErrorf("want an https:// URL")
	case u.Hostname() == "":
		return inputErrorf("the URL has no host")
	case u.User != nil:
		return inputErrorf("the URL carries credentials; receivers check the X-Gmini-Signature header instead")
	case u.Fragment != "" || u.RawFragment != "":
		return inputErrorf("the URL has a fragment, which is never sent")
	}
	return nil
}
