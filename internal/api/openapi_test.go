package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
)

// openapiMethods are the operation keys of an OpenAPI path item.
var openapiMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// openapiDoc decodes the served document.
func openapiDoc(t *testing.T) map[string]any {
	t.Helper()
	raw, err := OpenAPIJSON()
	if err != nil {
		t.Fatalf("OpenAPIJSON: %v", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("OpenAPIJSON returned invalid JSON: %v", err)
	}
	return doc
}

// docOperation is one operation of the document.
type docOperation struct {
	Method string // upper case, as in Route.Method
	Path   string
	Op     map[string]any
	Item   map[string]any // the path item, for path-level parameters
}

func (o docOperation) key() string { return o.Method + " " + o.Path }

// docOperations returns every operation under /api/v1, keyed "METHOD path".
func docOperations(t *testing.T, doc map[string]any) map[string]docOperation {
	t.Helper()
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatalf("document has no paths object")
	}
	out := map[string]docOperation{}
	for path, v := range paths {
		if path != "/api/v1" && !strings.HasPrefix(path, "/api/v1/") {
			continue
		}
		item, ok := v.(map[string]any)
		if !ok {
			t.Errorf("path %s: not an object", path)
			continue
		}
		for _, m := range openapiMethods {
			op, ok := item[m].(map[string]any)
			if !ok {
				if item[m] != nil {
					t.Errorf("%s %s: operation is not an object", strings.ToUpper(m), path)
				}
				continue
			}
			o := docOperation{Method: strings.ToUpper(m), Path: path, Op: op, Item: item}
			out[o.key()] = o
		}
	}
	return out
}

// resolve follows a local JSON pointer such as #/components/schemas/X.
func resolve(doc map[string]any, ref string) (any, error) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("not a local reference")
	}
	var cur any = doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		part = strings.NewReplacer("~1", "/", "~0", "~").Replace(part)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q is inside a non-object", part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("no %q", part)
		}
	}
	return cur, nil
}

// deref returns v, or what it refers to when it is a {"$ref": ...} object.
func deref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m, _ := v.(map[string]any)
	for i := 0; m != nil && i < 10; i++ {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		r, err := resolve(doc, ref)
		if err != nil {
			t.Errorf("$ref %s: %v", ref, err)
			return nil
		}
		m, _ = r.(map[string]any)
	}
	return m
}

func routeStatus(rt Route) int {
	if rt.Status == 0 {
		return http.StatusOK
	}
	return rt.Status
}

// TestOpenAPIMatchesRoutes checks that the document describes exactly the
// routes of Routes, each the way the route table says it behaves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := openapiDoc(t)
	ops := docOperations(t, doc)

	routes := map[string]Route{}
	for _, rt := range (&API{}).Routes() {
		k := rt.Method + " " + rt.Path
		if _, dup := routes[k]; dup {
			t.Errorf("Routes lists %s twice", k)
		}
		routes[k] = rt
	}

	var missing, extra []string
	for k := range routes {
		if _, ok := ops[k]; !ok {
			missing = append(missing, k)
		}
	}
	for k := range ops {
		if _, ok := routes[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes in Routes() but not in openapi.yaml (document them):\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("operations in openapi.yaml that Routes() does not serve (remove them or add the routes):\n  %s", strings.Join(extra, "\n  "))
	}

	errorResponse := map[string]string{
		"400": "#/components/responses/BadRequest",
		"401": "#/components/responses/Unauthorized",
		"403": "#/components/responses/Forbidden",
		"404": "#/components/responses/NotFound",
		"409": "#/components/responses/Conflict",
		"413": "#/components/responses/TooLarge",
	}
	opIDs := map[string]string{}
	keys := make([]string, 0, len(routes))
	for k := range routes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rt := routes[k]
		o, ok := ops[k]
		if !ok {
			continue
		}
		op := o.Op

		id, _ := op["operationId"].(string)
		if id == "" {
			t.Errorf("%s: no operationId", k)
		} else if prev, dup := opIDs[id]; dup {
			t.Errorf("%s: operationId %q is also used by %s", k, id, prev)
		} else {
			opIDs[id] = k
		}
		if s, _ := op["summary"].(string); s != rt.Summary {
			t.Errorf("%s: summary is %q, the route's Summary is %q", k, s, rt.Summary)
		}

		// Success status.
		responses, _ := op["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s: no responses", k)
			continue
		}
		var success []string
		for code := range responses {
			if strings.HasPrefix(code, "2") {
				success = append(success, code)
			}
		}
		sort.Strings(success)
		if want := strconv.Itoa(routeStatus(rt)); !slices.Equal(success, []string{want}) {
			t.Errorf("%s: documented success status %v, the route answers %s", k, success, want)
		}
		if r := deref(t, doc, responses["204"]); r != nil && r["content"] != nil {
			t.Errorf("%s: a 204 response has no content", k)
		}

		// Error responses use the shared components.
		for code, want := range errorResponse {
			v, ok := responses[code]
			if !ok {
				continue
			}
			if ref, _ := v.(map[string]any)["$ref"].(string); ref != want {
				t.Errorf("%s: response %s should be $ref %s, not %v", k, code, want, v)
			}
		}

		// Security and permission.
		sec, hasSec := op["security"].([]any)
		switch rt.Permission {
		case auth.Public:
			if !hasSec || len(sec) != 0 {
				t.Errorf("%s: public route needs security: []", k)
			}
		default:
			if hasSec && len(sec) == 0 {
				t.Errorf("%s: route needs %s but the document says it is public", k, rt.Permission)
			}
			if _, ok := responses["401"]; !ok {
				t.Errorf("%s: authenticated route should document 401", k)
			}
		}
		if rt.Permission != auth.Public && rt.Permission != auth.Authenticated {
			desc, _ := op["description"].(string)
			scope := "at platform scope"
			if rt.Scoped {
				scope = "in the workspace"
			}
			if want := "Requires `" + string(rt.Permission) + "` " + scope; !strings.Contains(desc, want) {
				t.Errorf("%s: description should say %q: %q", k, want, desc)
			}
			if _, ok := responses["403"]; !ok {
				t.Errorf("%s: route needs %s and should document 403", k, rt.Permission)
			}
		}
		if rt.Scoped && !strings.Contains(rt.Path, "{ws}") {
			t.Errorf("%s: scoped route without a {ws} path segment", k)
		}

		checkPathParams(t, doc, o)

		// Request body: JSON, closed to unknown fields, with its errors.
		if rb := deref(t, doc, op["requestBody"]); rb != nil {
			if req, _ := rb["required"].(bool); !req {
				t.Errorf("%s: requestBody should be required", k)
			}
			content, _ := rb["content"].(map[string]any)
			media, _ := content["application/json"].(map[string]any)
			schema := deref(t, doc, media["schema"])
			raw := false
			for mt, v := range content {
				body := deref(t, doc, v.(map[string]any)["schema"])
				raw = raw || (mt != "application/json" && body["format"] == "binary")
			}
			if raw && len(content) == 1 {
				// Raw bytes (an upload chunk, a code archive): no JSON
				// schema to close.
			} else if schema == nil {
				t.Errorf("%s: requestBody has no application/json schema", k)
			} else if ap, ok := schema["additionalProperties"].(bool); !ok || ap {
				t.Errorf("%s: request body schema needs additionalProperties: false (the server refuses unknown fields)", k)
			}
			for _, code := range []string{"400", "413"} {
				if _, ok := responses[code]; !ok {
					t.Errorf("%s: takes a body and should document %s", k, code)
				}
			}
		}
	}
}

var pathParamRE = regexp.MustCompile(`\{([^}]+)\}`)

// checkPathParams checks that the path's {params} and the declared
// in: path parameters are the same.
func checkPathParams(t *testing.T, doc map[string]any, o docOperation) {
	t.Helper()
	want := map[string]bool{}
	for _, m := range pathParamRE.FindAllStringSubmatch(o.Path, -1) {
		want[m[1]] = true
	}
	got := map[string]bool{}
	for _, list := range []any{o.Item["parameters"], o.Op["parameters"]} {
		params, _ := list.([]any)
		for _, p := range params {
			pm := deref(t, doc, p)
			if pm == nil {
				t.Errorf("%s: a parameter is not an object", o.key())
				continue
			}
			if pm["in"] != "path" {
				continue
			}
			name, _ := pm["name"].(string)
			if req, _ := pm["required"].(bool); !req {
				t.Errorf("%s: path parameter %q must be required: true", o.key(), name)
			}
			got[name] = true
		}
	}
	for name := range want {
		if !got[name] {
			t.Errorf("%s: path parameter {%s} is not declared", o.key(), name)
		}
	}
	for name := range got {
		if !want[name] {
			t.Errorf("%s: declares path parameter %q that the path does not have", o.key(), name)
		}
	}
}

// TestOpenAPIRefs checks that every $ref resolves, every security
// requirement names a scheme, and every component is used.
func TestOpenAPIRefs(t *testing.T) {
	doc := openapiDoc(t)
	used := map[string]bool{}
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"]; ok {
				s, _ := ref.(string)
				if !strings.HasPrefix(s, "#/components/") {
					t.Errorf("%s: $ref %v does not point into #/components/", at, ref)
				} else if _, err := resolve(doc, s); err != nil {
					t.Errorf("%s: $ref %s does not resolve: %v", at, s, err)
				}
				used[s] = true
			}
			for k, e := range v {
				walk(at+"/"+k, e)
			}
		case []any:
			for i, e := range v {
				walk(at+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", doc)

	components, _ := doc["components"].(map[string]any)
	schemes, _ := components["securitySchemes"].(map[string]any)
	checkSecurity := func(at string, v any) {
		reqs, _ := v.([]any)
		for _, r := range reqs {
			m, _ := r.(map[string]any)
			for name := range m {
				if _, ok := schemes[name]; !ok {
					t.Errorf("%s: security requirement names unknown scheme %q", at, name)
				}
			}
		}
	}
	checkSecurity("#/security", doc["security"])
	for k, o := range docOperations(t, doc) {
		checkSecurity(k, o.Op["security"])
	}

	var unused []string
	for kind, v := range components {
		if kind == "securitySchemes" {
			continue
		}
		m, _ := v.(map[string]any)
		for name := range m {
			if ref := "#/components/" + kind + "/" + name; !used[ref] {
				unused = append(unused, ref)
			}
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("components nothing refers to (remove or use them):\n  %s", strings.Join(unused, "\n  "))
	}
}

// TestOpenAPIEnums checks the enums that mirror Go constants.
func TestOpenAPIEnums(t *testing.T) {
	doc := openapiDoc(t)
	enum := func(ref string) []string {
		v, err := resolve(doc, ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		list, _ := v.([]any)
		out := make([]string, 0, len(list))
		for _, e := range list {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	var roles []string
	for _, r := range auth.Roles {
		roles = append(roles, string(r))
	}
	if got := enum("#/components/schemas/Role/enum"); !slices.Equal(got, roles) {
		t.Errorf("Role enum is %v, auth.Roles is %v", got, roles)
	}
	kinds := []string{}
	for _, k := range []fault.Kind{fault.Invalid, fault.NotFound, fault.AlreadyExists, fault.FailedPrecondition,
		fault.Unauthenticated, fault.PermissionDenied, fault.ResourceExhausted, fault.TooLarge, fault.Unavailable, fault.Internal} {
		kinds = append(kinds, string(k))
	}
	got := enum("#/components/schemas/Error/properties/error/properties/code/enum")
	sort.Strings(got)
	sort.Strings(kinds)
	if !slices.Equal(got, kinds) {
		t.Errorf("Error code enum is %v, the fault kinds are %v", got, kinds)
	}
}

// TestOpenAPIJSON checks the served form of the document.
func TestOpenAPIJSON(t *testing.T) {
	raw, err := OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(raw) {
		t.Fatalf("OpenAPIJSON is not valid JSON")
	}
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Info    map[string]any `json:"info"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi is %q, want 3.0.3", doc.OpenAPI)
	}
	if doc.Info["title"] == nil || doc.Info["version"] == nil {
		t.Errorf("info needs title and version: %v", doc.Info)
	}
	if len(doc.Paths) == 0 {
		t.Errorf("document has no paths")
	}
}
