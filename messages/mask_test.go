package messages_test

import (
	"strings"
	"testing"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

func TestMaskPhone(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "NANP, 1-digit code", in: "+12025550163", want: "+1********63"},
		{name: "Russia, 1-digit code", in: "+74951234567", want: "+7********67"},
		{name: "UK, 2-digit code", in: "+447911123456", want: "+44********56"},
		{name: "Germany, 2-digit code", in: "+4915123456789", want: "+49*********89"},
		{name: "Lithuania, 3-digit code", in: "+37060012345", want: "+370******45"},
		{name: "Ireland, 3-digit code in zone 3", in: "+353851234567", want: "+353*******67"},
		{name: "Czechia, 3-digit code in zone 4", in: "+420601123456", want: "+420*******56"},
		{name: "shortest, 1-digit code", in: "+1234567", want: "+1****67"},
		{name: "shortest, 3-digit code", in: "+3701234", want: "+370**34"},
		{name: "longest", in: "+123456789012345", want: "+1************45"},
		{name: "empty", in: "", want: "<masked>"},
		{name: "no plus", in: "12025550163", want: "<masked>"},
		{name: "spaces", in: "+1 202 555 0163", want: "<masked>"},
		{name: "dashes", in: "+1-202-555-0163", want: "<masked>"},
		{name: "leading zero", in: "+02025550163", want: "<masked>"},
		{name: "too short", in: "+123456", want: "<masked>"},
		{name: "too long", in: "+1234567890123456", want: "<masked>"},
		{name: "letters", in: "+1202555O163", want: "<masked>"},
		{name: "plus only", in: "+", want: "<masked>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := messages.MaskPhone(tt.in); got != tt.want {
				t.Errorf("MaskPhone(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestMaskPhoneNeverRevealsSubscriber checks every length and calling code
// shape: the masked form keeps the length, the calling code and at most the
// last two digits of the subscriber number.
func TestMaskPhoneNeverRevealsSubscriber(t *testing.T) {
	for _, first := range []string{"1", "7", "44", "86", "370", "999"} {
		for n := 7; n <= 15; n++ {
			digits := (first + "987654321098765")[:n]
			phone := "+" + digits
			cc := messages.CallingCode(phone)
			got := messages.MaskPhone(phone)
			if len(got) != len(phone) {
				t.Errorf("MaskPhone(%q) = %q, want length %d", phone, got, len(phone))
			}
			if !strings.HasPrefix(got, "+"+cc) {
				t.Errorf("MaskPhone(%q) = %q, want prefix %q", phone, got, "+"+cc)
			}
			subscriber := got[1+len(cc):]
			if shown := len(subscriber) - strings.Count(subscriber, "*"); shown > 2 {
				t.Errorf("MaskPhone(%q) = %q shows %d subscriber digits, want at most 2", phone, got, shown)
			}
			if !strings.HasSuffix(subscriber, phone[len(phone)-2:]) {
				t.Errorf("MaskPhone(%q) = %q, want the last two digits kept", phone, got)
			}
		}
	}
}

func TestCallingCode(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"+12025550163", "1"},
		{"+18095551234", "1"}, // Dominican Republic shares zone 1
		{"+74951234567", "7"},
		{"+77011234567", "7"}, // Kazakhstan shares zone 7
		{"+201001234567", "20"},
		{"+27821234567", "27"},
		{"+447911123456", "44"},
		{"+4915123456789", "49"},
		{"+8613812345678", "86"},
		{"+919812345678", "91"},
		{"+989121234567", "98"},
		{"+2348012345678", "234"},
		{"+37060012345", "370"},
		{"+353851234567", "353"},
		{"+420601123456", "420"},
		{"+50212345678", "502"},
		{"+6421234567", "64"},
		{"+67512345678", "675"},
		{"+80012345678", "800"},
		{"+85212345678", "852"},
		{"+97150123456", "971"},
		{"", ""},
		{"12025550163", ""},
		{"+1 202 555 0163", ""},
		{"+02025550163", ""},
	}
	for _, tt := range tests {
		if got := messages.CallingCode(tt.in); got != tt.want {
			t.Errorf("CallingCode(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCallingCodeLengths checks every two-digit start against the ITU-T
// list of assigned two-digit country calling codes, written out here
// independently of the package's table.
func TestCallingCodeLengths(t *testing.T) {
	twoDigit := map[string]bool{}
	for _, c := range strings.Fields(`20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49
		51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98`) {
		twoDigit[c] = true
	}
	for d1 := '1'; d1 <= '9'; d1++ {
		for d2 := '0'; d2 <= '9'; d2++ {
			start := string(d1) + string(d2)
			phone := "+" + start + "123456789"
			want := 3
			switch {
			case d1 == '1' || d1 == '7':
				want = 1
			case twoDigit[start]:
				want = 2
			}
			if got := messages.CallingCode(phone); len(got) != want || got != phone[1:1+want] {
				t.Errorf("CallingCode(%q) = %q, want the first %d digits", phone, got, want)
			}
		}
	}
}

func TestRedactText(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "empty", in: "", want: ""},
		{name: "no digits", in: "no digits here", want: "no digits here"},
		{name: "short runs stay", in: "HTTP 503 after 3 tries, 12 ms", want: "HTTP 503 after 3 tries, 12 ms"},
		{name: "code", in: "code 1234 is wrong", want: "code **** is wrong"},
		{name: "at start", in: "1234 is wrong", want: "**** is wrong"},
		{name: "at end", in: "wrong code 98765", want: "wrong code *****"},
		{name: "whole string", in: "1234", want: "****"},
		{name: "phone", in: "number +12025550163 is invalid", want: "number +*********** is invalid"},
		{name: "several runs", in: "a1234b5678c", want: "a****b****c"},
		{name: "mixed lengths", in: "12 345 6789 0", want: "12 345 **** 0"},
		// A number written with separators keeps its short groups: only
		// runs of 4 or more digits are masked.
		{name: "grouped phone", in: "+1 202 555 0163", want: "+1 202 555 ****"},
		{name: "multi-byte text around digits", in: "numéro 0601234567 invalide", want: "numéro ********** invalide"},
		// Only ASCII digits count.
		{name: "non-ASCII digits stay", in: "١٢٣٤", want: "١٢٣٤"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := messages.RedactText(tt.in); got != tt.want {
				t.Errorf("RedactText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactTextDoesNotCopyCleanText(t *testing.T) {
	s := "HTTP 503: iDenfy is down for 5 min"
	allocs := testing.AllocsPerRun(100, func() {
		if got := messages.RedactText(s); got != s {
			t.Fatalf("RedactText(%q) = %q, want it unchanged", s, got)
		}
	})
	if allocs != 0 {
		t.Errorf("RedactText(%q) allocated %v times, want 0 when nothing is masked", s, allocs)
	}
}
