package worker

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nyaruka/phonenumbers"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// exampleNumber is libphonenumber's example of a type in a region, in E.164.
func exampleNumber(t *testing.T, region string, typ phonenumbers.PhoneNumberType) string {
	t.Helper()
	num := phonenumbers.GetExampleNumberForType(region, typ)
	if num == nil {
		t.Fatalf("GetExampleNumberForType(%q, %v) = nil", region, typ)
	}
	return phonenumbers.Format(num, phonenumbers.E164)
}

func TestNumberType(t *testing.T) {
	tests := []struct {
		name  string
		phone string
		want  string
	}{
		{name: "US 900 is premium rate", phone: "+19002345678", want: "premium_rate"},
		{name: "UK 909 is premium rate", phone: "+449098790000", want: "premium_rate"},
		{name: "UK 0843 is premium rate", phone: "+448431234567", want: "premium_rate"},
		{name: "US fixed line or mobile", phone: "+12025550163", want: "fixed_line_or_mobile"},
		{name: "US toll free", phone: "+18002345678", want: "toll_free"},
		{name: "US unassigned area code", phone: "+19991234567", want: "unknown"},
		{name: "too long for its plan", phone: "+15550000000001", want: "unknown"},
		{name: "not a number", phone: "12025550163", want: "unknown"},
		{name: "LT mobile", phone: "+37060001005", want: "mobile"},
		{name: "LT fixed line", phone: "+37052345678", want: "fixed_line"},
		{name: "UK mobile", phone: "+447911123456", want: "mobile"},
	}
	for _, ex := range []struct {
		region string
		typ    phonenumbers.PhoneNumberType
		want   string
	}{
		{"US", phonenumbers.PREMIUM_RATE, "premium_rate"},
		{"GB", phonenumbers.PREMIUM_RATE, "premium_rate"},
		{"LT", phonenumbers.SHARED_COST, "shared_cost"},
		{"FR", phonenumbers.SHARED_COST, "shared_cost"},
		{"GB", phonenumbers.MOBILE, "mobile"},
		{"DE", phonenumbers.MOBILE, "mobile"},
		{"GB", phonenumbers.FIXED_LINE, "fixed_line"},
		{"LT", phonenumbers.FIXED_LINE, "fixed_line"},
		{"GB", phonenumbers.UAN, "uan"},
		{"GB", phonenumbers.PAGER, "pager"},
		{"GB", phonenumbers.VOIP, "voip"},
		{"DE", phonenumbers.VOICEMAIL, "voicemail"},
	} {
		tests = append(tests, struct {
			name  string
			phone string
			want  string
		}{name: "example " + ex.region + " " + ex.want, phone: exampleNumber(t, ex.region, ex.typ), want: ex.want})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := numberType(tt.phone); got != tt.want {
				t.Errorf("numberType(%q) = %q, want %q", tt.phone, got, tt.want)
			}
		})
	}
}

func TestCheckNumberType(t *testing.T) {
	withUnknown := append(slices.Clone(DefaultBlockedNumberTypes), "unknown")
	tests := []struct {
		name     string
		blocked  []string
		phone    string
		wantType string // named in the refusal; "" when allowed
	}{
		{name: "premium rate blocked by default", blocked: DefaultBlockedNumberTypes, phone: "+19002345678", wantType: "premium_rate"},
		{name: "shared cost blocked by default", blocked: DefaultBlockedNumberTypes, phone: "+37080812345", wantType: "shared_cost"},
		{name: "mobile allowed", blocked: DefaultBlockedNumberTypes, phone: "+447911123456"},
		{name: "fixed line allowed", blocked: DefaultBlockedNumberTypes, phone: "+37052345678"},
		{name: "unknown allowed by default", blocked: DefaultBlockedNumberTypes, phone: "+19991234567"},
		{name: "unknown blocked when listed", blocked: withUnknown, phone: "+19991234567", wantType: "unknown"},
		{name: "none blocks nothing", blocked: nil, phone: "+19002345678"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkNumberType(tt.blocked, tt.phone)
			if tt.wantType == "" {
				if got != nil {
					t.Errorf("checkNumberType(%v, %q) = %v, want nil", tt.blocked, tt.phone, got)
				}
				return
			}
			if got == nil || got.Code != messages.CodeNumberNotAllowed || got.Retryable ||
				!strings.Contains(got.Message, tt.wantType) {
				t.Fatalf("checkNumberType(%v, %q) = %v, want number_not_allowed naming %s", tt.blocked, tt.phone, got, tt.wantType)
			}
			if strings.Contains(got.Message, tt.phone[1:]) || strings.Contains(got.Message, tt.phone[len(tt.phone)-4:]) {
				t.Errorf("checkNumberType(%v, %q) = %q, which quotes the number", tt.blocked, tt.phone, got.Message)
			}
		})
	}
}

func TestParseBlockedNumberTypes(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string
	}{
		{name: "the default", in: "premium_rate,shared_cost,uan,pager,voicemail", want: DefaultBlockedNumberTypes},
		{name: "none", in: "none", want: nil},
		{name: "none in capitals", in: " NONE ", want: nil},
		{name: "empty", in: "", want: nil},
		{name: "spaces, case and duplicates", in: " Premium_Rate , unknown,premium_rate", want: []string{"premium_rate", "unknown"}},
		{name: "every type", in: "fixed_line,mobile,fixed_line_or_mobile,toll_free,premium_rate,shared_cost,voip,personal_number,pager,uan,voicemail,unknown",
			want: []string{"fixed_line", "mobile", "fixed_line_or_mobile", "toll_free", "premium_rate", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail", "unknown"}},
		{name: "misspelt", in: "premium_rate,premium", wantErr: `"premium" is not a number type; valid types: fixed_line, mobile,`},
		{name: "spaces for underscores", in: "premium rate", wantErr: `"premium rate" is not a number type`},
		{name: "empty entry", in: "premium_rate,,uan", wantErr: `"" is not a number type`},
		{name: "none among types", in: "none,uan", wantErr: `"none" is not a number type`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBlockedNumberTypes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "voicemail, unknown, or none") {
					t.Errorf("ParseBlockedNumberTypes(%q) = %v, %v; want an error containing %q and listing the valid types", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("ParseBlockedNumberTypes(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// libraryNumberType is numberType as it was before the compiled plans:
// libphonenumber's Parse and GetNumberType (parsedNumberType), the
// reference numberType must agree with on every input.
func libraryNumberType(phone string) string { return typeName(parsedNumberType(phone)) }

// sameAsLibrary fails t when numberType and the library disagree on phone,
// and reports whether the compiled plan, not the library, answered.
func sameAsLibrary(t *testing.T, phone string) bool {
	t.Helper()
	want := libraryNumberType(phone)
	if got := numberType(phone); got != want {
		t.Errorf("numberType(%q) = %q, want %q as libphonenumber says", phone, got, want)
	}
	_, planned := planNumberType(phone)
	return planned
}

// callingCodes are every calling code the library knows, in order.
func callingCodes() []int {
	var codes []int
	for cc := range phonenumbers.GetSupportedCallingCodes() {
		codes = append(codes, cc)
	}
	slices.Sort(codes)
	return codes
}

// examples are the library's example numbers of every type in every
// region and of every non-geographic calling code, in E.164.
func examples(t *testing.T) []*phonenumbers.PhoneNumber {
	t.Helper()
	var regions []string
	for r := range phonenumbers.GetSupportedRegions() {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	var nums []*phonenumbers.PhoneNumber
	for _, r := range regions {
		for _, typ := range numberTypeNames {
			if num := phonenumbers.GetExampleNumberForType(r, typ.typ); num != nil {
				nums = append(nums, num)
			}
		}
	}
	for _, cc := range callingCodes() {
		if phonenumbers.GetRegionCodeForCountryCode(cc) != nonGeoRegion {
			continue
		}
		num := phonenumbers.GetExampleNumberForNonGeoEntity(cc)
		if num == nil {
			t.Fatalf("GetExampleNumberForNonGeoEntity(%d) = nil", cc)
		}
		nums = append(nums, num)
	}
	if len(nums) < 1000 {
		t.Fatalf("%d example numbers, want the library's thousand and more", len(nums))
	}
	return nums
}

func TestNumberTypeMatchesLibraryOnExamples(t *testing.T) {
	planned, total := 0, 0
	for _, num := range examples(t) {
		e164 := phonenumbers.Format(num, phonenumbers.E164)
		cc := strconv.Itoa(int(num.GetCountryCode()))
		nsn := phonenumbers.GetNationalSignificantNumber(num)
		last := nsn[len(nsn)-1]
		variants := []string{
			e164,
			e164[:len(e164)-1] + string('0'+(last-'0'+1)%10),
			e164 + "7",
			e164[:len(e164)-1],
		}
		for _, phone := range variants {
			total++
			if sameAsLibrary(t, phone) {
				planned++
			}
		}
		// Parse strips the national prefix of the code's main region.
		byRegion, _ := regionMetadata()
		main := phonenumbers.GetRegionCodeForCountryCode(int(num.GetCountryCode()))
		if prefix := byRegion[main].GetNationalPrefix(); prefix != "" {
			phone := "+" + cc + prefix + nsn
			if sameAsLibrary(t, phone) {
				t.Errorf("planNumberType(%q) answered for a number behind the national prefix of %s, want it left to the library", phone, main)
			}
		}
	}
	// The plans are only worth their keep if they answer for most numbers.
	if planned*10 < total*9 {
		t.Errorf("compiled plans answered for %d of %d example numbers, want 90%%", planned, total)
	}
}
func TestNumberTypeMatchesLibraryOnRandomNumbers(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, cc := range callingCodes() {
		prefix := "+" + strconv.Itoa(cc)
		var b strings.Builder
		for range 300 {
			b.Reset()
			b.WriteString(prefix)
			for range 4 + rng.IntN(11) {
				b.WriteByte(byte('0' + rng.IntN(10)))
			}
			sameAsLibrary(t, b.String())
		}
	}
}

func TestNumberTypeMatchesLibraryOnOddInputs(t *testing.T) {
	tests := []struct {
		name  string
		phone string
	}{
		{name: "empty", phone: ""},
		{name: "plus alone", phone: "+"},
		{name: "one digit", phone: "+1"},
		{name: "two digits", phone: "+12"},
		{name: "three digits", phone: "+123"},
		{name: "calling code and one digit", phone: "+442"},
		{name: "calling code and two digits", phone: "+4420"},
		{name: "leading zero", phone: "+012025550163"},
		{name: "zeros", phone: "+0000000000"},
		{name: "unassigned calling code", phone: "+2999999999"},
		{name: "unassigned three-digit code", phone: "+8099999999"},
		{name: "no plus", phone: "12025550163"},
		{name: "double plus", phone: "++12025550163"},
		{name: "fullwidth plus", phone: "\uff0b12025550163"},
		{name: "spaces", phone: "+1 202 555 0163"},
		{name: "dashes and brackets", phone: "+1 (202) 555-0163"},
		{name: "leading space", phone: " +12025550163"},
		{name: "trailing space", phone: "+12025550163 "},
		{name: "letters", phone: "+1800FLOWERS"},
		{name: "letter in the middle", phone: "+4479111a3456"},
		{name: "extension", phone: "+12025550163 ext. 12"},
		{name: "hash extension", phone: "+12025550163#"},
		{name: "rfc 3966", phone: "tel:+1-202-555-0163"},
		{name: "phone context", phone: "2025550163;phone-context=+1"},
		{name: "arabic-indic digits", phone: "+\u0661\u0662\u0660\u0662\u0665\u0665\u0665\u0660\u0661\u0666\u0663"},
		{name: "national number of 17 digits", phone: "+4912345678901234567"},
		{name: "national number of 18 digits", phone: "+49123456789012345678"},
		{name: "twenty digits", phone: "+" + strings.Repeat("1", 20)},
		{name: "250 characters", phone: "+" + strings.Repeat("4", 249)},
		{name: "251 characters", phone: "+" + strings.Repeat("4", 250)},
		{name: "very long", phone: "+" + strings.Repeat("9", 10000)},
		{name: "argentine mobile", phone: "+5491123456789"},
		{name: "argentine fixed line", phone: "+541123456789"},
		{name: "UK behind its national prefix", phone: "+4407911123456"},
		{name: "US behind its national prefix", phone: "+112025550163"},
		{name: "international toll free", phone: "+80012345678"},
		{name: "non-geographic code", phone: "+882345678901"},
		{name: "invalid UTF-8", phone: "+1202\xff5550163"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sameAsLibrary(t, tt.phone)
		})
	}
}

// TestNumberTypeConcurrently has sends of several codes compile their
// plans at once, as a worker's first jobs do; run it with -race.
func TestNumberTypeConcurrently(t *testing.T) {
	var phones []string
	for _, num := range examples(t) {
		phones = append(phones, phonenumbers.Format(num, phonenumbers.E164))
	}
	want := make([]string, len(phones))
	for i, phone := range phones {
		want[i] = libraryNumberType(phone)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range phones {
				// Each goroutine walks the numbers from its own start.
				j := (i + g*len(phones)/4) % len(phones)
				if got := numberType(phones[j]); got != want[j] {
					t.Errorf("numberType(%q) = %q, want %q as libphonenumber says", phones[j], got, want[j])
				}
			}
		})
	}
	wg.Wait()
}

// FuzzNumberType holds numberType to libphonenumber on any input.
func FuzzNumberType(f *testing.F) {
	for _, seed := range []string{
		"", "+", "+12025550163", "+447911123456", "+4407911123456", "+37060012345",
		"+37080812345", "+4915112345678", "+5491123456789", "+80012345678",
		"+1 202 555 0163", "+1800FLOWERS", "tel:+1-202-555-0163", "+012025550163",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, phone string) {
		if got, want := numberType(phone), libraryNumberType(phone); got != want {
			t.Errorf("numberType(%q) = %q, want %q as libphonenumber says", phone, got, want)
		}
	})
}

// BenchmarkNumberType is what the blocked-types check adds to every send:
// libphonenumber's patterns, matched by Go's regexp.
func BenchmarkNumberType(b *testing.B) {
	for _, phone := range []string{"+12025550163", "+447911123456", "+37060012345", "+4915112345678"} {
		b.Run(phone, func(b *testing.B) {
			for b.Loop() {
				numberType(phone)
			}
		})
	}
}

// BenchmarkNumberTypeFallback is what a number behind its national prefix,
// or of a plan that prefix matches too often (Argentina), still costs.
func BenchmarkNumberTypeFallback(b *testing.B) {
	for _, phone := range []string{"+5491123456789", "+4407911123456"} {
		if _, planned := planNumberType(phone); planned {
			b.Fatalf("planNumberType(%q) answered, want it left to the library", phone)
		}
		b.Run(phone, func(b *testing.B) {
			for b.Loop() {
				numberType(phone)
			}
		})
	}
}
