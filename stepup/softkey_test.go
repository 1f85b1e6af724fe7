package stepup

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

// softKey is a software authenticator together with the browser around it: it reads
// the options JSON our API hands out and answers with the JSON a browser's
// PublicKeyCredential.toJSON() gives, signed with a real ES256 key. It is written from
// the WebAuthn spec, not from the library under test: CBOR by fxamacker/cbor, the
// signature by crypto/ecdsa.
type softKey struct {
	t      *testing.T
	priv   *ecdsa.PrivateKey
	id     []byte
	aaguid []byte
	handle []byte
	// count is the signature counter; each assertion adds one, unless frozen.
	count  uint32
	frozen bool

	// What the browser reports and the authenticator signs; tests change them to play
	// a phishing page, another RP or a lax authenticator.
	origin string
	rpID   string // empty: the RP ID of the options
	flags  byte
	// getType replaces the client data type of an assertion ("webauthn.get").
	getType string
}

// Authenticator data flags (WebAuthn §6.1).
const (
	flagUP = 0x01
	flagUV = 0x04
	flagBE = 0x08
	flagAT = 0x40
)

func newSoftKey(t *testing.T, origin string) *softKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := &softKey{t: t, priv: priv, id: make([]byte, 32), origin: origin, flags: flagUP | flagUV,
		aaguid: []byte{0xea, 0x9b, 0x8d, 0x66, 0x4d, 0x01, 0x1d, 0x21, 0x3c, 0xe4, 0xb6, 0xb4, 0x8c, 0xb5, 0x75, 0xd4}}
	_, _ = rand.Read(k.id)
	return k
}

var b64 = base64.RawURLEncoding

// creationOptions and requestOptions are the parts of the options JSON a browser uses.
type creationOptions struct {
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

type requestOptions struct {
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

type clientData struct {
	Type        string `json:"type"`
	Challenge   string `json:"challenge"`
	Origin      string `json:"origin"`
	CrossOrigin bool   `json:"crossOrigin"`
}

// create answers navigator.credentials.create(options) with a "none" attestation.
func (k *softKey) create(options []byte) []byte {
	k.t.Helper()
	var o creationOptions
	if err := json.Unmarshal(options, &o); err != nil {
		k.t.Fatalf("creation options: %v: %s", err, options)
	}
	handle, err := b64.DecodeString(o.PublicKey.User.ID)
	if err != nil {
		k.t.Fatalf("user.id: %v", err)
	}
	k.handle = handle
	cdj := k.clientData("webauthn.create", o.PublicKey.Challenge)

	point, err := k.priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		k.t.Fatal(err)
	}
	// COSE_Key (RFC 9053): kty EC2, alg ES256, crv P-256, x, y.
	cose := k.cbor(map[int]any{1: 2, 3: -7, -1: 1, -2: point[1:33], -3: point[33:65]})
	auth := k.authData(o.PublicKey.RP.ID, k.flags|flagAT)
	auth = append(auth, k.aaguid...)
	auth = binary.BigEndian.AppendUint16(auth, uint16(len(k.id)))
	auth = append(auth, k.id...)
	auth = append(auth, cose...)
	att := k.cbor(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": auth})

	return k.json(map[string]any{
		"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(cdj),
			"attestationObject": b64.EncodeToString(att),
			"transports":        []string{"internal"},
		},
		"clientExtensionResults":  map[string]any{},
		"authenticatorAttachment": "platform",
	})
}

// get answers navigator.credentials.get(options) with an assertion of this key, whether
// or not the options allow it (an attacker's script would not ask).
func (k *softKey) get(options []byte) []byte {
	k.t.Helper()
	var o requestOptions
	if err := json.Unmarshal(options, &o); err != nil {
		k.t.Fatalf("request options: %v: %s", err, options)
	}
	typ := "webauthn.get"
	if k.getType != "" {
		typ = k.getType
	}
	cdj := k.clientData(typ, o.PublicKey.Challenge)
	if !k.frozen {
		k.count++
	}
	auth := k.authData(o.PublicKey.RPID, k.flags)
	cdHash := sha256.Sum256(cdj)
	digest := sha256.Sum256(append(append([]byte{}, auth...), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
	if err != nil {
		k.t.Fatal(err)
	}
	return k.json(map[string]any{
		"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
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

func (k *softKey) clientData(typ, challenge string) []byte {
	return k.json(clientData{Type: typ, Challenge: challenge, Origin: k.origin})
}

// authData is rpIdHash || flags || signCount (WebAuthn §6.1), for the options' RP ID
// unless the test set another.
func (k *softKey) authData(optionsRPID string, flags byte) []byte {
	rpID := optionsRPID
	if k.rpID != "" {
		rpID = k.rpID
	}
	h := sha256.Sum256([]byte(rpID))
	out := append(h[:], flags)
	return binary.BigEndian.AppendUint32(out, k.count)
}

func (k *softKey) cbor(v any) []byte {
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

func (k *softKey) json(v any) []byte {
	k.t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

func mustUnmarshal(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
}
