package worker

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

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
	typ, ok := planNumberType(phone)
	if !ok {
		typ = parsedNumberType(phone)
	}
	return typeName(typ)
}

// typeName is typ as the configuration writes it.
func typeName(typ phonenumbers.PhoneNumberType) string {
	for _, t := range numberTypeNames {
		if t.typ == typ {
			return t.name
		}
	}
	return "unknown"
}

// parsedNumberType is libphonenumber's own answer, for the numbers the
// compiled plans do not settle.
func parsedNumberType(phone string) phonenumbers.PhoneNumberType {
	num, err := phonenumbers.Parse(phone, "")
	if err != nil {
		return phonenumbers.UNKNOWN
	}
	return phonenumbers.GetNumberType(num)
}

// planNumberType gives, for a '+' and ASCII digits, what Parse and
// GetNumberType would, without Parse's regexps and locked pattern cache;
// ok is false for any other input, and for any number Parse might change,
// which then goes to libphonenumber.
//
// It is exact because, for such input and no default region, Parse finds
// no extension, RFC 3966 context or letters, and takes as calling code the
// shortest prefix of 1 to 3 digits that is one, and as national number
// what follows it, unchanged unless the national prefix of the code's main
// region matches its start: those numbers are left to the library.
// GetNumberType then reads that national number back digit for digit
// (leading zeros included), which the plan matches against the same
// patterns, compiled from the same strings, in the same order.
func planNumberType(phone string) (phonenumbers.PhoneNumberType, bool) {
	if len(phone) < 2 || phone[0] != '+' || phone[1] == '0' {
		return 0, false
	}
	digits := phone[1:]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	codes := phonenumbers.GetSupportedCallingCodes()
	cc, n := 0, 0
	for i := 0; i < phonenumbers.MAX_LENGTH_COUNTRY_CODE && i < len(digits); i++ {
		cc = cc*10 + int(digits[i]-'0')
		if codes[cc] {
			n = i + 1
			break
		}
	}
	if n == 0 {
		return 0, false
	}
	nsn := digits[n:]
	// Parse refuses these lengths; the library's error says unknown.
	if len(nsn) < phonenumbers.MIN_LENGTH_FOR_NSN || len(nsn) > phonenumbers.MAX_LENGTH_FOR_NSN {
		return 0, false
	}
	plan := callingPlanFor(cc)
	if plan == nil || (plan.nationalPrefix != nil && plan.nationalPrefix.MatchString(nsn)) {
		return 0, false
	}
	return plan.numberType(nsn), true
}

// callingPlan is a calling code's numbering plan as GetNumberType reads it,
// its patterns compiled once instead of looked up in the library's locked
// cache, under built strings, at every call.
type callingPlan struct {
	// nationalPrefix is the main region's national prefix for parsing,
	// anchored as Parse anchors it; nil when the region has none.
	nationalPrefix *regexp.Regexp
	// regions are the code's regions in the library's order, the main one
	// first.
	regions []regionPlan
}

// regionPlan is one region's metadata as GetNumberType uses it.
type regionPlan struct {
	// leadingDigits picks the region of a shared calling code by its
	// first digits; nil when the region must be found by its patterns.
	leadingDigits *regexp.Regexp
	general       descPlan
	// types are tried in getNumberTypeHelper's order.
	types                  []typedDesc
	fixedLine, mobile      descPlan
	sameMobileAndFixedLine bool
}

type typedDesc struct {
	typ  phonenumbers.PhoneNumberType
	desc descPlan
}

type descPlan struct {
	lengths []int32
	pattern *regexp.Regexp
}

// matches is isNumberMatchingDesc: a listed possible length, then the
// pattern of the whole national number.
func (d *descPlan) matches(nsn string) bool {
	if len(d.lengths) > 0 && !slices.Contains(d.lengths, int32(len(nsn))) {
		return false
	}
	return d.pattern.MatchString(nsn)
}

// numberType follows GetRegionCodeForNumber, then getNumberTypeHelper.
func (p *callingPlan) numberType(nsn string) phonenumbers.PhoneNumberType {
	if len(p.regions) == 1 {
		return p.regions[0].numberType(nsn)
	}
	for i := range p.regions {
		r := &p.regions[i]
		if r.leadingDigits != nil {
			if r.leadingDigits.MatchString(nsn) {
				return r.numberType(nsn)
			}
		} else if typ := r.numberType(nsn); typ != phonenumbers.UNKNOWN {
			return typ
		}
	}
	return phonenumbers.UNKNOWN
}

func (r *regionPlan) numberType(nsn string) phonenumbers.PhoneNumberType {
	if !r.general.matches(nsn) {
		return phonenumbers.UNKNOWN
	}
	for i := range r.types {
		if r.types[i].desc.matches(nsn) {
			return r.types[i].typ
		}
	}
	if r.fixedLine.matches(nsn) {
		if r.sameMobileAndFixedLine || r.mobile.matches(nsn) {
			return phonenumbers.FIXED_LINE_OR_MOBILE
		}
		return phonenumbers.FIXED_LINE
	}
	if !r.sameMobileAndFixedLine && r.mobile.matches(nsn) {
		return phonenumbers.MOBILE
	}
	return phonenumbers.UNKNOWN
}

// callingPlans are compiled on a code's first number, so that start-up
// pays for none and a worker for few: a whole plan of +1 is some 300
// patterns.
var callingPlans [1000]struct {
	once sync.Once
	plan *callingPlan
}

func callingPlanFor(cc int) *callingPlan {
	c := &callingPlans[cc]
	c.once.Do(func() { c.plan = compileCallingPlan(cc) })
	return c.plan
}

// regionMetadata indexes the metadata the library loaded, as its own maps
// do: geographic regions by id, non-geographic entities by calling code.
var regionMetadata = sync.OnceValues(func() (map[string]*phonenumbers.PhoneMetadata, map[int32]*phonenumbers.PhoneMetadata) {
	byRegion := make(map[string]*phonenumbers.PhoneMetadata)
	byCode := make(map[int32]*phonenumbers.PhoneMetadata)
	coll, err := phonenumbers.MetadataCollection()
	if err != nil {
		return byRegion, byCode
	}
	for _, m := range coll.GetMetadata() {
		if m.GetId() == nonGeoRegion {
			byCode[m.GetCountryCode()] = m
		} else {
			byRegion[m.GetId()] = m
		}
	}
	return byRegion, byCode
})

// nonGeoRegion is the region of non-geographic calling codes such as +800.
const nonGeoRegion = "001"

// compileCallingPlan returns nil, sending every number of the code to the
// library, for metadata the plan does not reproduce: a region without
// metadata or a type description, or a pattern Go cannot compile, where
// the library answers unknown or panics in its own way.
func compileCallingPlan(cc int) *callingPlan {
	regions := phonenumbers.GetRegionCodesForCountryCode(cc)
	if len(regions) == 0 {
		return nil
	}
	byRegion, byCode := regionMetadata()
	supported := phonenumbers.GetSupportedRegions()
	p := &callingPlan{}
	for _, region := range regions {
		var m *phonenumbers.PhoneMetadata
		switch {
		case region == nonGeoRegion && len(regions) == 1:
			m = byCode[int32(cc)]
		case supported[region]:
			m = byRegion[region]
		}
		if m == nil {
			return nil
		}
		r, ok := compileRegionPlan(m)
		if !ok {
			return nil
		}
		p.regions = append(p.regions, r)
	}
	// Parse strips with the main region's metadata, the first listed.
	main := byRegion[regions[0]]
	if regions[0] == nonGeoRegion {
		main = byCode[int32(cc)]
	}
	if prefix := main.GetNationalPrefixForParsing(); prefix != "" {
		re, err := regexp.Compile("^(?:" + prefix + ")")
		if err != nil {
			return nil
		}
		p.nationalPrefix = re
	}
	return p
}

func compileRegionPlan(m *phonenumbers.PhoneMetadata) (regionPlan, bool) {
	r := regionPlan{sameMobileAndFixedLine: m.GetSameMobileAndFixedLinePattern()}
	if ld := m.GetLeadingDigits(); ld != "" {
		re, err := regexp.Compile("^(?:" + ld + ")")
		if err != nil {
			return r, false
		}
		r.leadingDigits = re
	}
	compile := func(d *phonenumbers.PhoneNumberDesc) (descPlan, bool) {
		if d == nil {
			return descPlan{}, false
		}
		re, err := regexp.Compile("^(?:" + d.GetNationalNumberPattern() + ")$")
		if err != nil {
			return descPlan{}, false
		}
		return descPlan{lengths: d.GetPossibleLength(), pattern: re}, true
	}
	var ok bool
	if r.general, ok = compile(m.GetGeneralDesc()); !ok {
		return r, false
	}
	for _, t := range []struct {
		typ  phonenumbers.PhoneNumberType
		desc *phonenumbers.PhoneNumberDesc
	}{
		{phonenumbers.PREMIUM_RATE, m.GetPremiumRate()},
		{phonenumbers.TOLL_FREE, m.GetTollFree()},
		{phonenumbers.SHARED_COST, m.GetSharedCost()},
		{phonenumbers.VOIP, m.GetVoip()},
		{phonenumbers.PERSONAL_NUMBER, m.GetPersonalNumber()},
		{phonenumbers.PAGER, m.GetPager()},
		{phonenumbers.UAN, m.GetUan()},
		{phonenumbers.VOICEMAIL, m.GetVoicemail()},
	} {
		d, ok := compile(t.desc)
		if !ok {
			return r, false
		}
		r.types = append(r.types, typedDesc{t.typ, d})
	}
	if r.fixedLine, ok = compile(m.GetFixedLine()); !ok {
		return r, false
	}
	if r.mobile, ok = compile(m.GetMobile()); !ok {
		return r, false
	}
	return r, true
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
