package api

import (
	_ "embed"
	"fmt"

	"sigs.k8s.io/yaml"
)

// openapiYAML is the hand-written description of every route in Routes;
// TestOpenAPIMatchesRoutes fails when the two disagree.
//
//go:embed openapi.yaml
var openapiYAML []byte

// OpenAPIJSON returns the OpenAPI document encoded as JSON, as served.
func OpenAPIJSON() ([]byte, error) {
	doc, err := yaml.YAMLToJSON(openapiYAML)
	if err != nil {
		return nil, fmt.Errorf("embedded openapi.yaml: %w", err)
	}
	return doc, nil
}
