package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// The chain's own events (marks.go writes them).
const (
	// EventAuditStarted is the first event of every process that writes a chain.
	EventAuditStarted = "audit_started"
	// EventCheckpoint is a signed statement of where the chain stands.
	EventCheckpoint = "checkpoint"
)

// audit_started's previous_stop: how the last process that wrote the chain stopped.
const (
	StopNone    = "none"    // no saved head: the chain starts here
	StopClean   = "clean"   // a graceful stop saved the head after its last event
	StopUnclean = "unclean" // the head says running: a crash, kill -9 or power loss
)

// Checkpoint fields, beside the chain's own (instance and time are the checkpoint's).
const (
	FieldHeadSeq   = "head_seq"
	FieldHead      = "head"
	FieldFromSeq   = "from_seq"
	FieldCount     = "count"
	FieldKeyID     = "kid"
	FieldSignature = "signature"
)

// CheckpointType is the JWS "typ" of a checkpoint signature.
const CheckpointType = "jit-audit-checkpoint+jws"

// Checkpoint says: instance's chain stood at seq with hash head at time, and count
// events (from seq from_seq) came since the previous checkpoint. Its signature is a
// compact JWS (EdDSA, the audit key's kid) whose payload is the checkpoint as JSON; the
// event carries both, and Instance and Time are the event's own chain fields.
type Checkpoint struct {
	Instance string `json:"instance"`
	Seq      int64  `json:"seq"`
	Head     string `json:"head"`
	FromSeq  int64  `json:"from_seq"`
	Count    int64  `json:"count"`
	Time     string `json:"time"`
}

// SignCheckpoint signs cp with the audit key.
func (k *AuditKey) SignCheckpoint(cp Checkpoint) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k.Private},
		(&jose.SignerOptions{}).WithType(CheckpointType).WithHeader(jose.HeaderKey("kid"), k.ID))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(cp)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Fields are the checkpoint event's fields, without the chain's.
func (cp Checkpoint) Fields(signature, keyID string) []zap.Field {
	return []zap.Field{
		zap.Int64(FieldHeadSeq, cp.Seq), zap.String(FieldHead, cp.Head), zap.Int64(FieldFromSeq, cp.FromSeq),
		zap.Int64(FieldCount, cp.Count), zap.String(FieldKeyID, keyID), zap.String(FieldSignature, signature),
	}
}

// checkpointOf reads a checkpoint event's statement and signature.
func checkpointOf(l *Line) (Checkpoint, string, error) {
	cp := Checkpoint{Instance: l.Text(FieldInstance), Head: l.Text(FieldHead), Time: l.Text(FieldTime)}
	var ok1, ok2, ok3 bool
	cp.Seq, ok1 = l.Int(FieldHeadSeq)
	cp.FromSeq, ok2 = l.Int(FieldFromSeq)
	cp.Count, ok3 = l.Int(FieldCount)
	signature := l.Text(FieldSignature)
	if !ok1 || !ok2 || !ok3 || cp.Head == "" || signature == "" {
		return cp, "", errors.New("a checkpoint without head_seq, head, from_seq, count and signature")
	}
	return cp, signature, nil
}

// VerifyCheckpoint checks that signature is an audit key's signature of cp.
func VerifyCheckpoint(keys AuditKeys, cp Checkpoint, signature string) error {
	jws, err := parseCheckpointJWS(signature)
	if err != nil {
		return err
	}
	kid := jws.Signatures[0].Protected.KeyID
	key, ok := keys[kid]
	if !ok {
		return fmt.Errorf("the checkpoint is signed by audit key %q, which is not a trusted key", kid)
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return fmt.Errorf("the checkpoint signature does not verify with audit key %q", kid)
	}
	want, _ := json.Marshal(cp)
	if !bytes.Equal(payload, want) {
		return fmt.Errorf("the checkpoint's fields are not what audit key %q signed (signed %s)", kid, payload)
	}
	return nil
}

// CheckpointKeyID is the kid in a checkpoint signature's protected header: the one the
// event's own kid field must name, as the field is not signed.
func CheckpointKeyID(signature string) (string, error) {
	jws, err := parseCheckpointJWS(signature)
	if err != nil {
		return "", err
	}
	return jws.Signatures[0].Protected.KeyID, nil
}

// parseCheckpointJWS reads a checkpoint signature as the signer makes it: compact only,
// since the JSON form may carry unprotected headers that no signature covers; one
// signature, typed as a checkpoint (SignCheckpoint has always set the typ), so that a
// JWS the audit key signed for another purpose is not taken for a checkpoint.
func parseCheckpointJWS(signature string) (*jose.JSONWebSignature, error) {
	jws, err := jose.ParseSignedCompact(signature, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("the checkpoint signature is not a compact EdDSA JWS: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("the checkpoint signature holds more than one signature")
	}
	if typ, _ := jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType].(string); typ != CheckpointType {
		return nil, fmt.Errorf("the checkpoint signature's typ is %q, not %q: a JWS made for something else", typ, CheckpointType)
	}
	return jws, nil
}
