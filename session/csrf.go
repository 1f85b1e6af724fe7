package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// csrfLifetime is how long a form stays submittable after it was shown.
const csrfLifetime = 12 * time.Hour

// csrfTokenLength is the encoded length of 8 bytes of expiry and 32 of MAC.
const csrfTokenLength = 54

// CSRFToken makes a token for a form shown to user on the site audience. It is
// stateless: any instance of a cluster can check it, and it is worthless to anyone but
// that user on that site.
func (k *Keyring) CSRFToken(user, audience string, now time.Time) string {
	var buf [8 + sha256.Size]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(now.Add(csrfLifetime).Unix()))
	copy(buf[8:], k.csrfMAC(buf[:8], user, audience))
	return base64.RawURLEncoding.EncodeToString(buf[:])
}

// CheckCSRF reports whether token was made by CSRFToken for this user and site and has
// not expired.
func (k *Keyring) CheckCSRF(token, user, audience string, now time.Time) bool {
	if len(token) != csrfTokenLength {
		return false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != 8+sha256.Size {
		return false
	}
	if !hmac.Equal(raw[8:], k.csrfMAC(raw[:8], user, audience)) {
		return false
	}
	return now.Unix() < int64(binary.BigEndian.Uint64(raw[:8]))
}

func (k *Keyring) csrfMAC(expiry []byte, user, audience string) []byte {
	mac := hmac.New(sha256.New, k.csrf)
	mac.Write([]byte("caddy-jit csrf v1\x00"))
	mac.Write(expiry)
	// Lengths first, so that no two (user, audience) pairs share an encoding.
	var lengths [16]byte
	binary.BigEndian.PutUint64(lengths[:8], uint64(len(user)))
	binary.BigEndian.PutUint64(lengths[8:], uint64(len(audience)))
	mac.Write(lengths[:])
	mac.Write([]byte(user))
	mac.Write([]byte(audience))
	return mac.Sum(nil)
}
