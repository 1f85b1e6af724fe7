package session

import "time"

// Usage is what one instance served under a session: the numbers of its
// session_ended event, equal to the session's access events in that instance's log.
type Usage struct {
	Requests, Mutating int64
	// BytesIn counts request bodies, BytesOut response bodies.
	BytesIn, BytesOut int64
	First, Last       time.Time
	// Statuses counts responses by class: [1] 1xx … [5] 5xx; [0] anything else.
	Statuses [6]int64
}

// Use is one request served under a session, as its access event tells it.
type Use struct {
	Status            int
	BytesIn, BytesOut int64
	Mutating          bool
	At                time.Time
}

func (u *Usage) add(x Use) {
	u.Requests++
	if x.Mutating {
		u.Mutating++
	}
	u.BytesIn += max(x.BytesIn, 0)
	u.BytesOut += max(x.BytesOut, 0)
	if u.First.IsZero() || x.At.Before(u.First) {
		u.First = x.At
	}
	if x.At.After(u.Last) {
		u.Last = x.At
	}
	class := x.Status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	u.Statuses[class]++
}

// How a session ended, as session_ended says.
const (
	EndedExpired     = "expired"
	EndedDeactivated = "deactivated"
	EndedRevoked     = "revoked"
	EndedReplaced    = "replaced"
)

// Ended is a session that ended while this instance had served it.
type Ended struct {
	SessionID, User, Role string
	// How is EndedExpired, EndedDeactivated, EndedRevoked or EndedReplaced; Known says whether this
	// instance ended it (and so knows how and by whom), else the caller looks the
	// session's record up.
	How   string
	By    string
	Known bool
	Usage Usage
}
