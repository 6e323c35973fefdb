package messages

import "strings"

// MaskPhone returns a form of an E.164 phone number that is safe to log: the
// country calling code and the last two digits stay, the rest becomes '*'
// ("+12025550163" -> "+1********63"). Anything that is not E.164 is masked
// whole, since it may still be a number written another way.
func MaskPhone(s string) string {
	if !isE164(s) {
		return "<masked>"
	}
	cc := callingCodeLength(s[1:])
	keep := 1 + cc
	if len(s)-keep <= 2 {
		return s[:keep] + strings.Repeat("*", len(s)-keep)
	}
	return s[:keep] + strings.Repeat("*", len(s)-keep-2) + s[len(s)-2:]
}

// CallingCode returns the country calling code of an E.164 number, without
// the '+', or "" when s is not E.164.
func CallingCode(s string) string {
	if !isE164(s) {
		return ""
	}
	return s[1 : 1+callingCodeLength(s[1:])]
}

// callingCodeLength tells how many leading digits of an international number
// form its country calling code. ITU-T E.164 codes form a prefix code: zones
// 1 and 7 are one digit, the two-digit codes are listed, and every other code
// has three digits.
func callingCodeLength(digits string) int {
	switch digits[0] {
	case '1', '7':
		return 1
	}
	if len(digits) >= 2 && strings.Contains(twoDigitCodes, digits[:2]) {
		return 2
	}
	return 3
}

// twoDigitCodes are the assigned two-digit country calling codes, separated
// by spaces: the needle holds no space, so Contains cannot match across two.
const twoDigitCodes = "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98"

// RedactText masks every run of 4 or more digits in free text, so that a
// vendor message or an error that quotes a phone number or a verification
// code can be logged and passed on. Shorter runs, such as HTTP statuses,
// stay.
func RedactText(s string) string {
	var b strings.Builder
	last := 0 // s[:last] is already in b
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j-i >= 4 {
			b.WriteString(s[last:i])
			b.WriteString(strings.Repeat("*", j-i))
			last = j
		}
		i = j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
