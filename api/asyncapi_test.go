package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v4"

	"github.com/idenfy-worker/idenfy-worker/api"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// These tests hold api/asyncapi.yaml to the Go contract in package
// messages: field names and types, limits, codes and subjects. The ones in
// wire_test.go hold it to what a running worker publishes.

// docURL names the document for the schema compiler; nothing is fetched.
const docURL = "urn:idenfy-worker:asyncapi.json"

// document is asyncapi.yaml, decoded as JSON would be, with a compiler for
// the schemas it holds.
type document struct {
	raw      map[string]any
	compiler *jsonschema.Compiler
}

func loadDocument(t testing.TB) *document {
	t.Helper()
	var y any
	if err := yaml.Unmarshal(api.AsyncAPI, &y); err != nil {
		t.Fatalf("parsing asyncapi.yaml: %v", err)
	}
	// Through JSON, so that numbers and maps have the types the schema
	// compiler expects.
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatalf("asyncapi.yaml is not JSON-compatible: %v", err)
	}
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	// AsyncAPI's Schema Object is a superset of JSON Schema draft 07.
	c.DefaultDraft(jsonschema.Draft7)
	if err := c.AddResource(docURL, raw); err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(j, &root); err != nil {
		t.Fatal(err)
	}
	return &document{raw: root, compiler: c}
}

// schema compiles the schema at pointer, e.g.
// /components/messages/SendResult/payload.
func (d *document) schema(t testing.TB, pointer string) *jsonschema.Schema {
	t.Helper()
	sch, err := d.compiler.Compile(docURL + "#" + pointer)
	if err != nil {
		t.Fatalf("compiling the schema at %s: %v", pointer, err)
	}
	return sch
}

// validate checks a JSON body against the schema at pointer.
func (d *document) validate(t testing.TB, pointer string, body []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return d.schema(t, pointer).Validate(v)
}

// at returns the value at a JSON pointer, following a $ref it lands on (and
// an allOf holding a single $ref, the draft 07 way to annotate one).
func (d *document) at(t testing.TB, pointer string) map[string]any {
	t.Helper()
	var v any = d.raw
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("asyncapi.yaml: %s: %q is not inside an object", pointer, tok)
		}
		if v, ok = m[tok]; !ok {
			t.Fatalf("asyncapi.yaml has nothing at %s (no %q)", pointer, tok)
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("asyncapi.yaml: %s is %T, want an object", pointer, v)
	}
	return d.deref(t, m)
}

func (d *document) deref(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	if ref, ok := m["$ref"].(string); ok {
		return d.at(t, strings.TrimPrefix(ref, "#"))
	}
	if all, ok := m["allOf"].([]any); ok && len(all) == 1 && m["type"] == nil {
		if sub, ok := all[0].(map[string]any); ok && sub["$ref"] != nil {
			return d.deref(t, sub)
		}
	}
	return m
}

// jsonField is a field of a Go type as encoding/json writes it.
type jsonField struct {
	name      string
	omitempty bool
	kind      string // the JSON Schema type
}

func jsonFields(typ reflect.Type) []jsonField {
	var fields []jsonField
	for f := range typ.Fields() {
		tag, ok := f.Tag.Lookup("json")
		if !ok || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		fields = append(fields, jsonField{
			name:      name,
			omitempty: slices.Contains(strings.Split(opts, ","), "omitempty"),
			kind:      schemaType(f.Type),
		})
	}
	return fields
}

func schemaType(typ reflect.Type) string {
	switch typ.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "integer"
	case reflect.Pointer, reflect.Struct:
		return "object"
	}
	return typ.Kind().String()
}

// TestSchemasMatchGoTypes: each message schema has exactly the JSON fields
// of its Go type, with the same JSON types, and requires exactly those
// encoding/json always writes (the ones without omitempty).
func TestSchemasMatchGoTypes(t *testing.T) {
	d := loadDocument(t)
	tests := []struct {
		name   string
		typ    reflect.Type
		schema string
	}{
		{name: "SendRequest", typ: reflect.TypeFor[messages.SendRequest](), schema: "/components/schemas/SendRequest"},
		{name: "VerifyRequest", typ: reflect.TypeFor[messages.VerifyRequest](), schema: "/components/schemas/VerifyRequest"},
		{name: "SendResult", typ: reflect.TypeFor[messages.SendResult](), schema: "/components/schemas/SendResult"},
		{name: "VerifyResult", typ: reflect.TypeFor[messages.VerifyResult](), schema: "/components/schemas/VerifyResult"},
		{name: "Error", typ: reflect.TypeFor[messages.Error](), schema: "/components/schemas/Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sch := d.at(t, tt.schema)
			props, _ := sch["properties"].(map[string]any)
			var want, wantRequired []string
			for _, f := range jsonFields(tt.typ) {
				want = append(want, f.name)
				if !f.omitempty {
					wantRequired = append(wantRequired, f.name)
				}
				p, ok := props[f.name].(map[string]any)
				if !ok {
					continue
				}
				if got := d.deref(t, p)["type"]; got != f.kind {
					t.Errorf("%s.%s: schema type %v, want %s (the Go field's)", tt.name, f.name, got, f.kind)
				}
			}
			got := mapKeys(props)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s: schema properties %q, want the Go type's JSON fields %q", tt.name, got, want)
			}
			gotRequired := stringList(sch["required"])
			slices.Sort(gotRequired)
			slices.Sort(wantRequired)
			if !slices.Equal(gotRequired, wantRequired) {
				t.Errorf("%s: schema required %q, want the fields without omitempty %q", tt.name, gotRequired, wantRequired)
			}
		})
	}
}

// TestStatusesMatch: the status enums are the statuses of each result.
func TestStatusesMatch(t *testing.T) {
	d := loadDocument(t)
	tests := []struct {
		name   string
		schema string
		want   []messages.Status
	}{
		{name: "SendResult", schema: "/components/schemas/SendResult/properties/status", want: []messages.Status{messages.StatusSent, messages.StatusFailed}},
		{name: "VerifyResult", schema: "/components/schemas/VerifyResult/properties/status", want: []messages.Status{messages.StatusVerified, messages.StatusRejected, messages.StatusFailed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := stringList(d.at(t, tt.schema)["enum"])
			var want []string
			for _, s := range tt.want {
				want = append(want, string(s))
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s status enum = %q, want %q", tt.name, got, want)
			}
		})
	}
}

// TestErrorCodesMatch: the document lists every code of messages.Codes,
// in order and no other, each with a meaning, its retryability and its
// Nats-Service-Error-Code.
func TestErrorCodesMatch(t *testing.T) {
	d := loadDocument(t)
	ec := d.at(t, "/components/schemas/ErrorCode")
	var want []string
	for _, c := range messages.Codes {
		want = append(want, string(c))
	}
	if got := stringList(ec["enum"]); !slices.Equal(got, want) {
		t.Errorf("ErrorCode enum = %q, want messages.Codes %q", got, want)
	}
	codes, _ := ec["x-codes"].(map[string]any)
	sorted := slices.Sorted(slices.Values(want))
	if got := mapKeys(codes); !slices.Equal(got, sorted) {
		t.Errorf("ErrorCode x-codes = %q, want messages.Codes %q", got, sorted)
	}
	for _, c := range messages.Codes {
		t.Run(string(c), func(t *testing.T) {
			info, ok := codes[string(c)].(map[string]any)
			if !ok {
				t.Fatalf("x-codes has no %s", c)
			}
			if desc, _ := info["description"].(string); desc == "" {
				t.Errorf("x-codes.%s has no description", c)
			}
			if got := info["x-retryable"]; got != c.Retryable() {
				t.Errorf("x-codes.%s.x-retryable = %v, want %v (Code.Retryable)", c, got, c.Retryable())
			}
			if got := info["x-invalid-input"] == true; got != c.IsInvalidInput() {
				t.Errorf("x-codes.%s.x-invalid-input = %v, want %v (Code.IsInvalidInput)", c, got, c.IsInvalidInput())
			}
			if status, ok := info["x-service-error-code"].(float64); !ok || status < 400 || status > 599 {
				t.Errorf("x-codes.%s.x-service-error-code = %v, want an HTTP-like status", c, info["x-service-error-code"])
			}
		})
	}
}

// TestSubjectsMatch: channel addresses, with the prefix parameter at its
// default, are the subjects of messages.NewSubjects; the names around them
// are the ones the Go packages use.
func TestSubjectsMatch(t *testing.T) {
	d := loadDocument(t)
	if got := d.at(t, "/components/parameters/prefix")["default"]; got != messages.DefaultPrefix {
		t.Errorf("prefix default = %v, want %q", got, messages.DefaultPrefix)
	}
	subj := messages.NewSubjects(messages.DefaultPrefix)
	expand := func(s any) string {
		str, _ := s.(string)
		return strings.ReplaceAll(str, "{prefix}", messages.DefaultPrefix)
	}
	tests := []struct {
		name    string
		pointer string
		field   string
		want    string
	}{
		{name: "send", pointer: "/channels/send", field: "address", want: subj.Send},
		{name: "verify", pointer: "/channels/verify", field: "address", want: subj.Verify},
		{name: "jobs send", pointer: "/channels/jobsSend", field: "address", want: subj.JobsSend},
		{name: "jobs verify", pointer: "/channels/jobsVerify", field: "address", want: subj.JobsVerify},
		{name: "results send", pointer: "/channels/resultsSend", field: "address", want: subj.ResultsSend},
		{name: "results verify", pointer: "/channels/resultsVerify", field: "address", want: subj.ResultsVerify},
		{name: "jobs send stream", pointer: "/channels/jobsSend/x-jetstream", field: "subjects", want: subj.Jobs},
		{name: "jobs verify stream", pointer: "/channels/jobsVerify/x-jetstream", field: "subjects", want: subj.Jobs},
		{name: "results send stream", pointer: "/channels/resultsSend/x-jetstream", field: "subjects", want: subj.Results},
		{name: "results verify stream", pointer: "/channels/resultsVerify/x-jetstream", field: "subjects", want: subj.Results},
		{name: "jobs stream name", pointer: "/channels/jobsSend/x-jetstream", field: "stream", want: worker.DefaultStream},
		{name: "jobs consumer", pointer: "/channels/jobsSend/x-jetstream", field: "consumer", want: worker.DefaultConsumer},
		{name: "send queue group", pointer: "/operations/send/bindings/nats", field: "queue", want: messages.QueueGroup},
		{name: "verify queue group", pointer: "/operations/verify/bindings/nats", field: "queue", want: messages.QueueGroup},
		{name: "send micro service", pointer: "/operations/send", field: "x-micro-service", want: messages.ServiceName},
		{name: "verify micro service", pointer: "/operations/verify", field: "x-micro-service", want: messages.ServiceName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expand(d.at(t, tt.pointer)[tt.field]); got != tt.want {
				t.Errorf("%s.%s = %q, want %q", tt.pointer, tt.field, got, tt.want)
			}
		})
	}
}

// TestHeadersMatch: the header names are the ones the Go packages set and
// read.
func TestHeadersMatch(t *testing.T) {
	d := loadDocument(t)
	tests := []struct {
		name     string
		schema   string
		want     []string
		required bool
	}{
		{name: "request", schema: "/components/schemas/RequestHeaders", want: []string{messages.HeaderMsgID}},
		{name: "job", schema: "/components/schemas/JobHeaders", want: []string{messages.HeaderMsgID, messages.HeaderReplyTo}},
		{name: "micro error", schema: "/components/schemas/ServiceErrorHeaders", want: []string{micro.ErrorHeader, micro.ErrorCodeHeader}, required: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sch := d.at(t, tt.schema)
			props, _ := sch["properties"].(map[string]any)
			want := slices.Sorted(slices.Values(tt.want))
			if got := mapKeys(props); !slices.Equal(got, want) {
				t.Errorf("%s headers = %q, want %q", tt.name, got, want)
			}
			if !tt.required {
				return
			}
			if got := slices.Sorted(slices.Values(stringList(sch["required"]))); !slices.Equal(got, want) {
				t.Errorf("%s required headers = %q, want %q", tt.name, got, want)
			}
		})
	}
}

// TestLimitsMatch: the numbers in the schemas are the contract's constants.
func TestLimitsMatch(t *testing.T) {
	d := loadDocument(t)
	tests := []struct {
		name    string
		pointer string
		keyword string
		want    float64
	}{
		{name: "correlation_id", pointer: "/components/schemas/CorrelationID", keyword: "maxLength", want: messages.MaxCorrelationIDLength},
		{name: "sender_name", pointer: "/components/schemas/SendRequest/properties/sender_name", keyword: "maxLength", want: messages.MaxSenderNameLength},
		{name: "request_id min", pointer: "/components/schemas/RequestID", keyword: "minLength", want: messages.MinRequestIDLength},
		{name: "request_id max", pointer: "/components/schemas/RequestID", keyword: "maxLength", want: messages.MaxRequestIDLength},
		{name: "SendRequest size", pointer: "/components/messages/SendRequest", keyword: "x-max-bytes", want: messages.MaxMessageSize},
		{name: "VerifyRequest size", pointer: "/components/messages/VerifyRequest", keyword: "x-max-bytes", want: messages.MaxMessageSize},
		{name: "SendJob size", pointer: "/components/messages/SendJob", keyword: "x-max-bytes", want: messages.MaxMessageSize},
		{name: "VerifyJob size", pointer: "/components/messages/VerifyJob", keyword: "x-max-bytes", want: messages.MaxMessageSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := d.at(t, tt.pointer)[tt.keyword]; got != tt.want {
				t.Errorf("%s %s = %v, want %v", tt.pointer, tt.keyword, got, tt.want)
			}
		})
	}
}

// TestRequestSchemasAgreeWithDecode: a request payload passes its schema
// exactly when messages decodes it without error, so that a caller that
// validates against the document is refused for nothing the worker takes.
// Rules JSON Schema cannot say (a field given twice or in another case,
// Unicode spaces in a request_id) are left out.
func TestRequestSchemasAgreeWithDecode(t *testing.T) {
	d := loadDocument(t)
	id32 := strings.Repeat("a", 32)
	tests := []struct {
		name    string
		verify  bool
		payload string
	}{
		{name: "send minimal", payload: `{"phone_number":"+12025550163"}`},
		{name: "send full", payload: `{"phone_number":"+12025550163","sender_name":"Acme & Co.","correlation_id":"signup-42"}`},
		{name: "send unknown field", payload: `{"phone_number":"+12025550163","locale":"en"}`},
		{name: "phone 7 digits", payload: `{"phone_number":"+1234567"}`},
		{name: "phone 6 digits", payload: `{"phone_number":"+123456"}`},
		{name: "phone 15 digits", payload: `{"phone_number":"+123456789012345"}`},
		{name: "phone 16 digits", payload: `{"phone_number":"+1234567890123456"}`},
		{name: "phone leading 0", payload: `{"phone_number":"+02025550163"}`},
		{name: "phone no plus", payload: `{"phone_number":"12025550163"}`},
		{name: "phone dashes", payload: `{"phone_number":"+1-202-555-0163"}`},
		{name: "phone missing", payload: `{"sender_name":"Acme"}`},
		{name: "phone a number", payload: `{"phone_number":12025550163}`},
		{name: "sender 11", payload: `{"phone_number":"+12025550163","sender_name":"ABCDEFGHIJK"}`},
		{name: "sender 12", payload: `{"phone_number":"+12025550163","sender_name":"ABCDEFGHIJKL"}`},
		{name: "sender empty", payload: `{"phone_number":"+12025550163","sender_name":""}`},
		{name: "sender leading space", payload: `{"phone_number":"+12025550163","sender_name":" Acme"}`},
		{name: "sender trailing space", payload: `{"phone_number":"+12025550163","sender_name":"Acme "}`},
		{name: "sender inner space", payload: `{"phone_number":"+12025550163","sender_name":"Ac me"}`},
		{name: "sender punctuation only", payload: `{"phone_number":"+12025550163","sender_name":"-._&+'"}`},
		{name: "sender one letter", payload: `{"phone_number":"+12025550163","sender_name":"A"}`},
		{name: "sender non-ASCII", payload: `{"phone_number":"+12025550163","sender_name":"Café"}`},
		{name: "sender exclamation", payload: `{"phone_number":"+12025550163","sender_name":"Acme!"}`},
		{name: "correlation 128", payload: `{"phone_number":"+12025550163","correlation_id":"` + strings.Repeat("c", 128) + `"}`},
		{name: "correlation 129", payload: `{"phone_number":"+12025550163","correlation_id":"` + strings.Repeat("c", 129) + `"}`},
		{name: "correlation control", payload: `{"phone_number":"+12025550163","correlation_id":"a\u0007b"}`},
		{name: "correlation C1 control", payload: `{"phone_number":"+12025550163","correlation_id":"a\u0085b"}`},
		{name: "correlation unicode", payload: `{"phone_number":"+12025550163","correlation_id":"signup-ü-42"}`},
		{name: "send array", payload: `[]`},
		{name: "verify ok", verify: true, payload: `{"request_id":"` + id32 + `","received_code":"1234","correlation_id":"x"}`},
		{name: "request_id 31", verify: true, payload: `{"request_id":"` + id32[1:] + `","received_code":"1234"}`},
		{name: "request_id 40", verify: true, payload: `{"request_id":"` + id32 + "bbbbbbbb" + `","received_code":"1234"}`},
		{name: "request_id 41", verify: true, payload: `{"request_id":"` + id32 + "bbbbbbbbb" + `","received_code":"1234"}`},
		{name: "request_id space", verify: true, payload: `{"request_id":"` + id32[1:] + ` ","received_code":"1234"}`},
		{name: "request_id tab", verify: true, payload: `{"request_id":"` + id32 + `\t","received_code":"1234"}`},
		{name: "request_id missing", verify: true, payload: `{"received_code":"1234"}`},
		{name: "code 3 digits", verify: true, payload: `{"request_id":"` + id32 + `","received_code":"123"}`},
		{name: "code 5 digits", verify: true, payload: `{"request_id":"` + id32 + `","received_code":"12345"}`},
		{name: "code letter", verify: true, payload: `{"request_id":"` + id32 + `","received_code":"12a4"}`},
		{name: "code a number", verify: true, payload: `{"request_id":"` + id32 + `","received_code":1234}`},
		{name: "code missing", verify: true, payload: `{"request_id":"` + id32 + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			schema := "/components/schemas/SendRequest"
			decode := func(b []byte) error { _, err := messages.DecodeSendRequest(b); return err }
			if tt.verify {
				schema = "/components/schemas/VerifyRequest"
				decode = func(b []byte) error { _, err := messages.DecodeVerifyRequest(b); return err }
			}
			decodeErr := decode([]byte(tt.payload))
			schemaErr := d.validate(t, schema, []byte(tt.payload))
			if (decodeErr == nil) != (schemaErr == nil) {
				t.Errorf("payload %s: decode error %v, schema error %v; want both nil or both set", tt.payload, decodeErr, schemaErr)
			}
		})
	}
}

// TestExamplesMatchSchemas: every example in the document is valid for its
// message.
func TestExamplesMatchSchemas(t *testing.T) {
	d := loadDocument(t)
	msgs := d.at(t, "/components/messages")
	for _, name := range mapKeys(msgs) {
		m := d.at(t, "/components/messages/"+name)
		examples, _ := m["examples"].([]any)
		for i, ex := range examples {
			t.Run(fmt.Sprintf("%s/%d", name, i), func(t *testing.T) {
				ex, _ := ex.(map[string]any)
				for _, part := range []string{"payload", "headers"} {
					v, ok := ex[part]
					if !ok {
						continue
					}
					if _, ok := m[part]; !ok {
						t.Fatalf("%s example %d has %s but the message defines none", name, i, part)
					}
					body, err := json.Marshal(v)
					if err != nil {
						t.Fatal(err)
					}
					if err := d.validate(t, "/components/messages/"+name+"/"+part, body); err != nil {
						t.Errorf("%s example %d %s %s: %v", name, i, part, body, err)
					}
				}
			})
		}
	}
}

func mapKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func stringList(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
