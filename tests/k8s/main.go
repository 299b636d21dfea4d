// Command validate checks the deployment files with the projects' own Go types and loaders:
//
//	validate k8s FILE...      every YAML document of every FILE, decoded strictly (unknown fields
//	                          refused) into the Go type its apiVersion and kind name; an unknown
//	                          apiVersion/kind is an error
//	validate compose FILE     the compose file loaded and validated by compose-go, the loader
//	                          `docker compose` uses; prints the resolved project as JSON
//
// Exit status 1 and one line per problem on stderr when anything is refused. docs/kubernetes.md
// says what is checked where.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	istioextv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	istionetv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// newObject returns an empty value of the Go type for apiVersion/kind, or nil when unknown.
func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/Namespace":
		return &corev1.Namespace{}
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "gateway.networking.k8s.io/v1/Gateway":
		return &gwv1.Gateway{}
	case "gateway.networking.k8s.io/v1/GatewayClass":
		return &gwv1.GatewayClass{}
	case "gateway.networking.k8s.io/v1/HTTPRoute":
		return &gwv1.HTTPRoute{}
	case "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy":
		return &egv1a1.EnvoyExtensionPolicy{}
	case "gateway.envoyproxy.io/v1alpha1/EnvoyPatchPolicy":
		return &egv1a1.EnvoyPatchPolicy{}
	case "gateway.envoyproxy.io/v1alpha1/EnvoyProxy":
		return &egv1a1.EnvoyProxy{}
	case "extensions.istio.io/v1alpha1/WasmPlugin":
		return &istioextv1alpha1.WasmPlugin{}
	case "networking.istio.io/v1alpha3/EnvoyFilter":
		return &istionetv1alpha3.EnvoyFilter{}
	}
	return nil
}

// strictJSON decodes data into v refusing unknown fields and trailing data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the object")
	}
	return nil
}

// istioSpec is implemented by the Istio client-go objects: their spec is an istio.io/api
// protobuf message whose own UnmarshalJSON accepts unknown fields, so it is decoded again
// here with protojson, which refuses them.
func istioSpec(obj any) proto.Message {
	switch o := obj.(type) {
	case *istioextv1alpha1.WasmPlugin:
		return &o.Spec
	case *istionetv1alpha3.EnvoyFilter:
		return &o.Spec
	}
	return nil
}

func decodeDocument(doc []byte) (string, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return "", fmt.Errorf("not YAML: %w", err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return "", fmt.Errorf("not an object: %w", err)
	}
	what := fmt.Sprintf("%s %s/%s", head.Kind, head.Metadata.Namespace, head.Metadata.Name)
	obj := newObject(head.APIVersion, head.Kind)
	if obj == nil {
		return what, fmt.Errorf("unknown apiVersion/kind %q %q (add its Go type to tests/k8s/main.go)", head.APIVersion, head.Kind)
	}
	if head.Metadata.Name == "" {
		return what, errors.New("metadata.name missing")
	}
	if m := istioSpec(obj); m != nil {
		// The spec is checked by protojson below; the envelope (metadata) strictly here.
		var rest map[string]json.RawMessage
		if err := json.Unmarshal(js, &rest); err != nil {
			return what, err
		}
		delete(rest, "spec")
		envelope, _ := json.Marshal(rest)
		if err := strictJSON(envelope, obj); err != nil {
			return what, err
		}
		if len(head.Spec) == 0 {
			return what, errors.New("spec missing")
		}
		if err := protojson.Unmarshal(head.Spec, m); err != nil {
			return what, fmt.Errorf("spec: %w", err)
		}
		return what, nil
	}
	return what, strictJSON(js, obj)
}

// splitDocuments splits a YAML stream at its `---` lines, dropping empty documents.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []string
	flush := func() {
		text := strings.Join(cur, "\n")
		cur = nil
		empty := true
		for _, line := range strings.Split(text, "\n") {
			t := strings.TrimSpace(line)
			if t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(text))
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimRight(line, " \t\r") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

func validateK8s(files []string, out io.Writer) int {
	failed := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			failed++
			continue
		}
		docs := splitDocuments(data)
		if len(docs) == 0 {
			fmt.Fprintf(os.Stderr, "%s: no YAML document\n", f)
			failed++
		}
		for i, doc := range docs {
			what, err := decodeDocument(doc)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: document %d (%s): %v\n", f, i+1, what, err)
				failed++
				continue
			}
			fmt.Fprintf(out, "ok %s: document %d: %s\n", f, i+1, what)
		}
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "%d document(s) refused\n", failed)
		return 1
	}
	return 0
}

// validateCompose loads file as `docker compose -f file config` would, with only the
// environment given to this process (no .env file), and prints the resolved project.
func validateCompose(file string, out io.Writer) int {
	abs, err := filepath.Abs(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithEnv(os.Environ()),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
		return 1
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
		return 1
	}
	js, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
		return 1
	}
	fmt.Fprintln(out, string(js))
	return 0
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "k8s" {
		os.Exit(validateK8s(os.Args[2:], os.Stdout))
	}
	if len(os.Args) == 3 && os.Args[1] == "compose" {
		os.Exit(validateCompose(os.Args[2], os.Stdout))
	}
	fmt.Fprintln(os.Stderr, "usage: validate k8s FILE... | validate compose FILE")
	os.Exit(2)
}
