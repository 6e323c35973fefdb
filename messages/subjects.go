package messages

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the subject prefix when none is configured.
const DefaultPrefix = "idenfy.phone"

// Subjects are the NATS subjects of one deployment, derived from its prefix.
type Subjects struct {
	Send          string // request/reply send
	Verify        string // request/reply verify
	JobsSend      string // durable send jobs
	JobsVerify    string // durable verify jobs
	Jobs          string // wildcard of both job subjects, the stream's subject
	ResultsSend   string // every send outcome
	ResultsVerify string // every verify outcome
	Results       string // wildcard of both result subjects, the results stream's subject
}

// NewSubjects derives the subjects from prefix. It panics on a prefix that
// ValidatePrefix refuses; check configuration with ValidatePrefix first.
func NewSubjects(prefix string) Subjects {
	if err := ValidatePrefix(prefix); err != nil {
		panic("messages: " + err.Error())
	}
	return Subjects{
		Send:          prefix + ".send",
		Verify:        prefix + ".verify",
		JobsSend:      prefix + ".jobs.send",
		JobsVerify:    prefix + ".jobs.verify",
		Jobs:          prefix + ".jobs.>",
		ResultsSend:   prefix + ".results.send",
		ResultsVerify: prefix + ".results.verify",
		Results:       prefix + ".results.>",
	}
}

// ValidatePrefix reports whether prefix can start subjects: dot-separated
// non-empty tokens without wildcards or whitespace.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("subject prefix is empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return fmt.Errorf("subject prefix %q has an empty token", prefix)
		}
		if tok == "*" || tok == ">" || strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("subject prefix %q may not contain wildcards or whitespace", prefix)
		}
		for _, r := range tok {
			if r < 0x21 || r == 0x7f {
				return fmt.Errorf("subject prefix %q has a control character", prefix)
			}
		}
	}
	return nil
}
