package policy

import "testing"

func TestStepUpAccepts(t *testing.T) {
	for _, tc := range []struct {
		setting        string
		passkey, code  bool
		refusedPasskey Reason
		refusedCode    Reason
	}{
		{setting: "any", passkey: true, code: true},
		{setting: "webauthn", passkey: true, refusedCode: ReasonPasskeyRequired},
		{setting: "totp", code: true, refusedPasskey: ReasonCodeRequired},
	} {
		s, err := ParseStepUp(tc.setting)
		if err != nil {
			t.Fatalf("%s: %v", tc.setting, err)
		}
		if s.String() != tc.setting {
			t.Errorf("%s reads back as %s", tc.setting, s)
		}
		for _, passkey := range []bool{true, false} {
			d := s.Accepts(passkey)
			want, refusal := tc.code, tc.refusedCode
			if passkey {
				want, refusal = tc.passkey, tc.refusedPasskey
			}
			if d.Allowed != want || (!want && (d.Reason != refusal || d.Message == "")) {
				t.Errorf("step_up %s, passkey %v: got %+v", tc.setting, passkey, d)
			}
		}
		if s.AcceptsCode() != tc.code || s.AcceptsPasskey() != tc.passkey {
			t.Errorf("step_up %s: AcceptsCode %v AcceptsPasskey %v", tc.setting, s.AcceptsCode(), s.AcceptsPasskey())
		}
	}
	if _, err := ParseStepUp("passkey"); err == nil {
		t.Error("step_up passkey was accepted")
	}
}
