package worker

import (
	"slices"
	"strings"
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
