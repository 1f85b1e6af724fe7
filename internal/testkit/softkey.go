package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// SoftKey is a software passkey authenticator together with the browser around it, for
// the tests of the packages that drive package stepup: it reads the options JSON that
// stepup hands out for navigator.credentials.create or .get and answers with the JSON
// that a browser's PublicKeyCredential.toJSON() gives, signed with a real ES256 key.
// It is written from the WebAuthn spec, not from the library under test: CBOR by
// fxamacker/cbor, the signature by crypto/ecdsa. It verifies the user (UV) unless told
// otherwise, and gives no attestation ("none").
type SoftKey struct {
	// Synced makes the authenticator say that the passkey may be backed up (the BE
	// flag), as a synced passkey does. Set it before Create and leave it.
	Synced bool
	// What the browser reports and the authenticator signs; tests change them to play
	// a phishing page, another relying party or a lax authenticator.
	Origin string
	// RPID is the relying party the authenticator data is for; empty: the options'.
	RPID string
	// Flags are the authenticator data flags; zero: user present and verified, and
	// backup eligible when Synced.
	Flags byte
	// GetType replaces an assertion's client data type ("webauthn.get").
	GetType string

	t      *testing.T
	priv   *ecdsa.PrivateKey
	id     []byte
	handle []byte
	// count is the signature counter; each assertion adds one, unless frozen.
	count  uint32
	frozen bool
}

// SoftKeyAAGUID is the make and model every SoftKey reports, as stepup.Passkey's
// AAGUID shows it.
const SoftKeyAAGUID = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"

var softKeyAAGUID = []byte{0xea, 0x9b, 0x8d, 0x66, 0x4d, 0x01, 0x1d, 0x21, 0x3c, 0xe4, 0xb6, 0xb4, 0x8c, 0xb5, 0x75, 0xd4}

// Authenticator data flags (WebAuthn §6.1): user present, user verified, backup
// eligible, attested credential data included.
const (
	FlagUP = 0x01
	FlagUV = 0x04
	FlagBE = 0x08
	FlagAT = 0x40
)

var b64 = base64.RawURLEncoding

// NewSoftKey makes an authenticator with a new key and a random 32-byte credential id,
// in a browser at origin (scheme://host[:port]), which it reports in its client data.
func NewSoftKey(t *testing.T, origin string) *SoftKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := &SoftKey{t: t, priv: priv, id: make([]byte, 32), Origin: origin}
	_, _ = rand.Read(k.id)
	return k
}

// ID is the credential id in base64url, as stepup.Passkey's ID names it.
func (k *SoftKey) ID() string { return b64.EncodeToString(k.id) }

// CreationOptions and RequestOptions are the parts of the options JSON (for
// navigator.credentials.create and .get) that a browser uses.
type CreationOptions struct {
	PublicKey struct {
		Challenge string `json:"challenge"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		AuthenticatorSelection struct {
			UserVerification string `json:"userVerification"`
		} `json:"authenticatorSelection"`
		ExcludeCredentials []struct {
			ID string `json:"id"`
		} `json:"excludeCredentials"`
		Timeout int `json:"timeout"`
	} `json:"publicKey"`
}

type RequestOptions struct {
	PublicKey struct {
		Challenge        string `json:"challenge"`
		RPID             string `json:"rpId"`
		UserVerification string `json:"userVerification"`
		AllowCredentials []struct {
			ID string `json:"id"`
		} `json:"allowCredentials"`
		Timeout int `json:"timeout"`
	} `json:"publicKey"`
}

// Create answers navigator.credentials.create(options) with a "none" attestation.
func (k *SoftKey) Create(options []byte) []byte {
	k.t.Helper()
	var o CreationOptions
	if err := json.Unmarshal(options, &o); err != nil {
		k.t.Fatalf("creation options: %v: %s", err, options)
	}
	handle, err := b64.DecodeString(o.PublicKey.User.ID)
	if err != nil {
		k.t.Fatalf("creation options: user.id: %v", err)
	}
	k.handle = handle
	cdj := k.clientData("webauthn.create", o.PublicKey.Challenge)

	point, err := k.priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		k.t.Fatal(err)
	}
	// COSE_Key (RFC 9053): kty EC2, alg ES256, crv P-256, x, y.
	cose := k.cbor(map[int]any{1: 2, 3: -7, -1: 1, -2: point[1:33], -3: point[33:65]})
	auth := k.authData(o.PublicKey.RP.ID, k.flags()|FlagAT)
	auth = append(auth, softKeyAAGUID...)
	auth = binary.BigEndian.AppendUint16(auth, uint16(len(k.id)))
	auth = append(auth, k.id...)
	auth = append(auth, cose...)
	att := k.cbor(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": auth})

	return k.json(map[string]any{
		"id": k.ID(), "rawId": k.ID(), "type": "public-key",
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(cdj),
			"attestationObject": b64.EncodeToString(att),
			"transports":        []string{"internal"},
		},
		"clientExtensionResults":  map[string]any{},
		"authenticatorAttachment": "platform",
	})
}

// Get answers navigator.credentials.get(options) with an assertion of this key, whether
// or not the options allow it (an attacker's script would not ask). Its user handle is
// the one Create saw; a key never created sends none.
func (k *SoftKey) Get(options []byte) []byte {
	k.t.Helper()
	var o RequestOptions
	if err := json.Unmarshal(options, &o); err != nil {
		k.t.Fatalf("request options: %v: %s", err, options)
	}
	typ := "webauthn.get"
	if k.GetType != "" {
		typ = k.GetType
	}
	cdj := k.clientData(typ, o.PublicKey.Challenge)
	if !k.frozen {
		k.count++
	}
	auth := k.authData(o.PublicKey.RPID, k.flags())
	cdHash := sha256.Sum256(cdj)
	digest := sha256.Sum256(append(append([]byte{}, auth...), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
	if err != nil {
		k.t.Fatal(err)
	}
	return k.json(map[string]any{
		"id": k.ID(), "rawId": k.ID(), "type": "public-key",
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(cdj),
			"authenticatorData": b64.EncodeToString(auth),
			"signature":         b64.EncodeToString(sig),
			"userHandle":        b64.EncodeToString(k.handle),
		},
		"clientExtensionResults":  map[string]any{},
		"authenticatorAttachment": "platform",
	})
}

func (k *SoftKey) flags() byte {
	switch {
	case k.Flags != 0:
		return k.Flags
	case k.Synced:
		return FlagUP | FlagUV | FlagBE
	}
	return FlagUP | FlagUV
}

func (k *SoftKey) clientData(typ, challenge string) []byte {
	return k.json(map[string]any{"type": typ, "challenge": challenge, "origin": k.Origin, "crossOrigin": false})
}

// authData is rpIdHash || flags || signCount (WebAuthn §6.1), for the options' RP ID
// unless RPID names another.
func (k *SoftKey) authData(rpID string, flags byte) []byte {
	if k.RPID != "" {
		rpID = k.RPID
	}
	h := sha256.Sum256([]byte(rpID))
	return binary.BigEndian.AppendUint32(append(h[:], flags), k.count)
}

func (k *SoftKey) cbor(v any) []byte {
	k.t.Helper()
	em, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		k.t.Fatal(err)
	}
	out, err := em.Marshal(v)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

func (k *SoftKey) json(v any) []byte {
	k.t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}
