package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The approvals page is for approvers, and it lists the open requests of the roles
// they approve, found through an index rather than by reading every stored request
// (issue 12, finding 5).

// approvalsIndexRoles: deploy is approved by carol and dave, billing by erin; bob and
// frank request, approve nothing.
const approvalsIndexRoles = `
		role deploy {
			max_duration 1h
			justification required 10
			eligible alice bob frank
			approval {
				approvers carol dave
				count 1
			}
		}
		role billing {
			max_duration 1h
			justification required 10
			eligible alice bob
			approval {
				approvers erin
				count 1
			}
		}`

// TestApprovalsPageForApproversOnly: someone who approves no role gets 403 on the
// approvals page (without it reading storage); an approver sees exactly the pending
// requests of the roles they approve: not decided ones, not other roles'. Requests
// stored by a version without the index still show after the upgrade (a restart on
// storage without the index), and deciding them keeps the index right.
func TestApprovalsPageForApproversOnly(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: approvalsIndexRoles, Sites: []siteSpec{{Auth: true, Jit: "\tjit deploy"}}})
	site := e.site(0)
	users := map[string]*totpUser{}
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
		users[u] = e.enroll(u)
	}

	// Someone who approves nothing is turned away, whatever is stored.
	wantNotApprover := func(user, when string) {
		t.Helper()
		r := e.browser(user).get(site + "/.jit/approvals")
		if !wantStatus(t, r, http.StatusForbidden, user+" (approves no role) opening /.jit/approvals "+when) {
			return
		}
		if text := pageText(t, r.Body); !strings.Contains(text, "approve no role") {
			t.Errorf("%s's 403 on /.jit/approvals does not say they approve no role: %s", user, text)
		}
	}
	wantNotApprover("bob", "before any request")

	request := func(user, role string) string {
		t.Helper()
		r := e.browser(user).activate(site, role, "/", users[user].next(t), nil)
		return wfRequestID(t, r, user+" requesting "+role)
	}
	decide := func(approver, id, decision, comment string) {
		t.Helper()
		b := e.browser(approver)
		f := b.approvalForm(site, id)
		if f == nil {
			t.Fatalf("%s's approvals page does not list request %s", approver, id)
		}
		wantStatus(t, b.decide(site, f, decision, comment, users[approver].next(t)), http.StatusOK, approver+" deciding "+id)
	}
	alicesDeploy := request("alice", "deploy")
	bobsDeploy := request("bob", "deploy")
	franksDeploy := request("frank", "deploy")
	alicesBilling := request("alice", "billing")
	decide("carol", bobsDeploy, "deny", "not during the freeze")
	decide("dave", franksDeploy, "approve", "")

	wantListed := func(approver, when string, want ...string) {
		t.Helper()
		got := e.browser(approver).listedRequests(site)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s's approvals page %s lists %v, want %v", approver, when, got, want)
		}
	}
	wantListed("carol", "", alicesDeploy)
	wantListed("dave", "", alicesDeploy)
	wantListed("erin", "", alicesBilling)
	wantNotApprover("bob", "with requests stored")
	wantNotApprover("frank", "with requests stored")

	// The storage as a version without the index left it: the requests, no index.
	e.stop()
	if err := os.RemoveAll(filepath.Join(e.data.StorageDir, "jit", "request-index")); err != nil {
		t.Fatal(err)
	}
	e.start()
	wantListed("carol", "after the upgrade", alicesDeploy)
	wantListed("erin", "after the upgrade", alicesBilling)
	wantNotApprover("bob", "after the upgrade")

	// Deciding a request from before the upgrade takes it off every list.
	decide("erin", alicesBilling, "approve", "")
	wantListed("erin", "after approving the only billing request")
	wantListed("dave", "after erin's approval", alicesDeploy)
	decide("carol", alicesDeploy, "deny", "use the runbook instead")
	wantListed("dave", "after carol denied the last request")
}
