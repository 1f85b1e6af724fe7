package caddymodule

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// The admin routes of a user's passkeys: GET /jit/credentials/{user} lists them,
// DELETE /jit/credentials/{user}/{id} removes one (a lost or retired authenticator).

const credentialsRoute = "/jit/credentials/"

// maxCredentialIDBytes is WebAuthn's bound on a credential id.
const maxCredentialIDBytes = 1023

func handleCredentials(w http.ResponseWriter, r *http.Request) error {
	user, id, named, err := credentialsPath(r.URL.EscapedPath())
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	switch {
	case !named && r.Method != http.MethodGet:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use GET /jit/credentials/{user} to list a user's passkeys, DELETE /jit/credentials/{user}/{id} to remove one", r.Method)}
	case named && r.Method != http.MethodDelete:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed: use DELETE /jit/credentials/{user}/{id} to remove a passkey, GET /jit/credentials/{user} to list them", r.Method)}
	case user == "":
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("no user name: use /jit/credentials/{user}")}
	}
	// The name and the id are checked before the app, as the other routes check names.
	if err := checkUserName(user); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	if named {
		if err := CheckCredentialID(id); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("DELETE /jit/credentials/{user}/{id}: %v", err)}
		}
	}
	app, user, err := runningAppAndUser(user)
	if err != nil {
		return err
	}
	if !named {
		list, err := app.authority.StepUp.Passkeys().List(r.Context(), user)
		if err != nil {
			return storageError("listing the passkeys of "+user, err)
		}
		return writeJSON(w, http.StatusOK, adminapi.ListPasskeys(list))
	}
	removal, err := RemovePasskey(r.Context(), app.authority, user, id, operator(r), r.URL.Query().Get("reason"))
	if errors.Is(err, stepup.ErrPasskeyUnknownCredential) {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: err}
	}
	if err != nil {
		return storageError("removing a passkey of "+user, err)
	}
	return writeJSON(w, http.StatusOK, removal)
}

// credentialsPath splits the escaped path of a credentials route into the user and,
// when the path names one (named), the credential id, each unescaped: an escaped
// slash stays in its part, where the checks refuse it.
func credentialsPath(escaped string) (user, id string, named bool, err error) {
	rest := strings.TrimPrefix(escaped, credentialsRoute)
	parts := strings.Split(rest, "/")
	if len(parts) > 2 {
		return "", "", false, errors.New("the path has more than /jit/credentials/{user}/{id}: a credential id is base64url, which has no slash")
	}
	for i, p := range parts {
		if parts[i], err = url.PathUnescape(p); err != nil {
			return "", "", false, fmt.Errorf("the path is not valid percent-encoding: %v", err)
		}
	}
	if len(parts) == 2 {
		return parts[0], parts[1], true, nil
	}
	return parts[0], "", false, nil
}

// CheckCredentialID checks a passkey's credential id as the admin API and the
// commands take it: base64url without padding, as GET /jit/credentials/{user} lists
// it, of at most the 1023 bytes WebAuthn allows.
func CheckCredentialID(id string) error {
	const listed = "as `caddy jit credentials USER` lists it"
	switch {
	case id == "":
		return errors.New("no credential id: give the passkey's id " + listed)
	case len(id) > base64.RawURLEncoding.EncodedLen(maxCredentialIDBytes):
		return fmt.Errorf("the credential id has %d characters, more than a passkey's can have (%d): give the passkey's id %s",
			len(id), base64.RawURLEncoding.EncodedLen(maxCredentialIDBytes), listed)
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(id); err != nil {
		return fmt.Errorf("the credential id %q is not base64url (A-Z, a-z, 0-9, - and _, no padding): give the passkey's id %s",
			printable.Truncate(id, 64), listed)
	}
	return nil
}

// RemovePasskey removes the user's passkey with the credential id, audited (event
// passkey_removed) as by's doing, for reason, and says what it was and what the user has left to
// step up with. The admin API and `caddy jit credentials remove` on storage both run
// it. An id the user has no passkey with is an error that names the user and the id
// and that errors.Is matches with stepup.ErrPasskeyUnknownCredential; nothing is
// removed then.
func RemovePasskey(ctx context.Context, a *authority.Authority, user, id, by, reason string) (adminapi.PasskeyRemoval, error) {
	passkeys := a.StepUp.Passkeys()
	// Read before the removal, so that a failure to read leaves the passkey in place
	// rather than removed without an answer.
	before, err := passkeys.List(ctx, user)
	if err != nil {
		return adminapi.PasskeyRemoval{}, fmt.Errorf("listing the passkeys of %s: %w", user, err)
	}
	enrolled, err := a.StepUp.Enrolled(ctx, user)
	if err != nil {
		return adminapi.PasskeyRemoval{}, fmt.Errorf("reading the TOTP enrollment of %s: %w", user, err)
	}
	i := slices.IndexFunc(before, func(pk stepup.Passkey) bool { return pk.ID == id })
	if i < 0 {
		return adminapi.PasskeyRemoval{}, unknownPasskeyError{user: user, id: id}
	}
	if err := passkeys.Remove(ctx, user, id, by, reason); errors.Is(err, stepup.ErrPasskeyUnknownCredential) {
		// Removed by someone else since the list was read.
		return adminapi.PasskeyRemoval{}, unknownPasskeyError{user: user, id: id}
	} else if err != nil {
		return adminapi.PasskeyRemoval{}, fmt.Errorf("removing the passkey %s of %s: %w", id, user, err)
	}
	return adminapi.PasskeyRemoval{User: user, Removed: adminapi.NewPasskey(before[i]), Remaining: len(before) - 1, TOTPEnrolled: enrolled}, nil
}

// unknownPasskeyError is a removal of a passkey the user does not have.
type unknownPasskeyError struct{ user, id string }

func (e unknownPasskeyError) Error() string {
	return fmt.Sprintf("%s has no passkey with the id %q: list their passkeys with `caddy jit credentials USER` (GET /jit/credentials/{user}) and give one of those ids", e.user, e.id)
}

func (unknownPasskeyError) Unwrap() error { return stepup.ErrPasskeyUnknownCredential }
