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
// Like package stepup's own test authenticator (which can also play a phishing page or
// a lax authenticator), it is written from the WebAuthn spec, not from the library
// under test: CBOR by fxamacker/cbor, the signature by crypto/ecdsa. It always verifies
// the user (UV) and asks for no attestation ("none").
type SoftKey struct {
	// Synced makes the authenticator say that the passkey may be backed up (the BE
	// flag), as a synced passkey does. Set it before Create and leave it.
	Synced bool

	t      *testing.T
	priv   *ecdsa.PrivateKey
	id     []byte
	handle []byte
	origin string
	// count is the signature counter; each assertion adds one.
	count uint32
}

// SoftKeyAAGUID is the make and model every SoftKey reports, as stepup.Passkey's
// AAGUID shows it.
const SoftKeyAAGUID = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"

var softKeyAAGUID = []byte{0xea, 0x9b, 0x8d, 0x66, 0x4d, 0x01, 0x1d, 0x21, 0x3c, 0xe4, 0xb6, 0xb4, 0x8c, 0xb5, 0x75, 0xd4}

// Authenticator data flags (WebAuthn §6.1): user present, user verified, backup
// eligible, attested credential data included.
const (
	flagUP = 0x01
	flagUV = 0x04
	flagBE = 0x08
	flagAT = 0x40
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
	k := &SoftKey{t: t, priv: priv, id: make([]byte, 32), origin: origin}
	_, _ = rand.Read(k.id)
	return k
}

// ID is the credential id in base64url, as stepup.Passkey's ID names it.
func (k *SoftKey) ID() string { return b64.EncodeToString(k.id) }

// Create answers navigator.credentials.create(options) with a "none" attestation.
func (k *SoftKey) Create(options []byte) []byte {
	k.t.Helper()
	var o struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
			RP        struct {
				ID string `json:"id"`
			} `json:"rp"`
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		} `json:"publicKey"`
	}
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
	auth := k.authData(o.PublicKey.RP.ID, k.flags()|flagAT)
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

// Get answers navigator.credentials.get(options) with an assertion of this key, which
// Create must have registered first (it takes the user handle from there).
func (k *SoftKey) Get(options []byte) []byte {
	k.t.Helper()
	var o struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
			RPID      string `json:"rpId"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(options, &o); err != nil {
		k.t.Fatalf("request options: %v: %s", err, options)
	}
	if k.handle == nil {
		k.t.Fatal("SoftKey.Get before Create: the key has no user handle")
	}
	cdj := k.clientData("webauthn.get", o.PublicKey.Challenge)
	k.count++
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
	if k.Synced {
		return flagUP | flagUV | flagBE
	}
	return flagUP | flagUV
}

func (k *SoftKey) clientData(typ, challenge string) []byte {
	return k.json(map[string]any{"type": typ, "challenge": challenge, "origin": k.origin, "crossOrigin": false})
}

// authData is rpIdHash || flags || signCount (WebAuthn §6.1).
func (k *SoftKey) authData(rpID string, flags byte) []byte {
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
