package worker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nyaruka/phonenumbers"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

type numberTypeName struct {
	typ  phonenumbers.PhoneNumberType
	name string
}

// numberTypeNames are libphonenumber's number types as the configuration
// writes them, in the library's order.
var numberTypeNames = []numberTypeName{
	{phonenumbers.FIXED_LINE, "fixed_line"},
	{phonenumbers.MOBILE, "mobile"},
	{phonenumbers.FIXED_LINE_OR_MOBILE, "fixed_line_or_mobile"},
	{phonenumbers.TOLL_FREE, "toll_free"},
	{phonenumbers.PREMIUM_RATE, "premium_rate"},
	{phonenumbers.SHARED_COST, "shared_cost"},
	{phonenumbers.VOIP, "voip"},
	{phonenumbers.PERSONAL_NUMBER, "personal_number"},
	{phonenumbers.PAGER, "pager"},
	{phonenumbers.UAN, "uan"},
	{phonenumbers.VOICEMAIL, "voicemail"},
	{phonenumbers.UNKNOWN, "unknown"},
}

// DefaultBlockedNumberTypes are the number types refused when none are
// configured: types that no person signs up with and that SMS pumping
// targets, because their operator shares the termination fee.
var DefaultBlockedNumberTypes = []string{"premium_rate", "shared_cost", "uan", "pager", "voicemail"}

// ParseBlockedNumberTypes reads a comma-separated list of number types,
// such as "premium_rate,shared_cost"; "none" (or "") blocks nothing.
func ParseBlockedNumberTypes(s string) ([]string, error) {
	if s = strings.TrimSpace(s); s == "" || strings.EqualFold(s, "none") {
		return nil, nil
	}
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if !isNumberType(name) {
			return nil, fmt.Errorf("%q is not a number type; valid types: %s, or none", name, validNumberTypes())
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// isNumberType reports whether name is one of libphonenumber's types, in
// lower case.
func isNumberType(name string) bool {
	return slices.ContainsFunc(numberTypeNames, func(t numberTypeName) bool { return t.name == name })
}

func validNumberTypes() string {
	names := make([]string, len(numberTypeNames))
	for i, t := range numberTypeNames {
		names[i] = t.name
	}
	return strings.Join(names, ", ")
}

// numberType returns the type of an E.164 number as libphonenumber decides
// it from the numbering plan of its country; "unknown" when the plan does
// not know the number.
func numberType(phone string) string {
	num, err := phonenumbers.Parse(phone, "")
	if err != nil {
		return "unknown"
	}
	typ := phonenumbers.GetNumberType(num)
	for _, t := range numberTypeNames {
		if t.typ == typ {
			return t.name
		}
	}
	return "unknown"
}

// checkNumberType answers number_not_allowed for a number whose type is
// blocked. The message names the type, never the number.
func checkNumberType(blocked []string, phone string) *messages.Error {
	if len(blocked) == 0 {
		return nil
	}
	typ := numberType(phone)
	if !slices.Contains(blocked, typ) {
		return nil
	}
	what := strings.ReplaceAll(typ, "_", " ") + " numbers"
	if typ == "unknown" {
		what = "numbers that their country's numbering plan does not know"
	}
	return messages.NewError(messages.CodeNumberNotAllowed,
		fmt.Sprintf("%s (type %s) are not allowed by this deployment", what, typ))
}
