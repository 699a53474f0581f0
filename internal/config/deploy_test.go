package config

import (
	"bufio"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// The example deployment files under deploy/ are read here against the settings
// gpubot knows, so they cannot rot: every variable they set exists, the secrets
// sit in the Secret, and the environment each replica would get loads without a
// problem, on etcd.

// knownSettings are the variables of the settings table.
func knownSettings() map[string]bool {
	known := map[string]bool{}
	fields := reflect.TypeFor[settings]()
	for i := range fields.NumField() {
		known[fields.Field(i).Tag.Get("envconfig")] = true
	}
	return known
}

// secretSettings hold credentials: they belong in a Secret, never a ConfigMap.
var secretSettings = []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "FAL_ADMIN_API_KEY", "ETCD_PASSWORD"}

// imageEnvironment is what the Dockerfile's ENV lines set in every container.
func imageEnvironment(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		if rest, ok := strings.CutPrefix(lines.Text(), "ENV "); ok {
			key, value, _ := strings.Cut(rest, "=")
			env[key] = value
		}
	}
	return env
}

// loadsOnEtcd checks that env, as a replica gets it, is a configuration with no
// problem that keeps its state in etcd.
func loadsOnEtcd(t *testing.T, file string, env map[string]string) {
	t.Helper()
	known := knownSettings()
	for key := range env {
		if !known[key] {
			t.Errorf("%s sets %s, which gpubot does not know", file, key)
		}
	}
	cfg, err := Load(func(key string) string { return env[key] })
	if err != nil {
		t.Fatalf("%s: the environment a replica gets does not load: %v", file, err)
	}
	if !cfg.Etcd.Enabled() {
		t.Errorf("%s: the replicas would not share etcd (ETCD_ENDPOINTS is empty)", file)
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Load(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestComposeFileRunsTwoReplicasOnEtcd(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Environment map[string]string `yaml:"environment"`
			EnvFile     string            `yaml:"env_file"`
			DependsOn   []string          `yaml:"depends_on"`
			Deploy      struct {
				Replicas int `yaml:"replicas"`
			} `yaml:"deploy"`
		} `yaml:"services"`
	}
	readYAML(t, "../../deploy/compose.yaml", &compose)
	gpubot, etcd := compose.Services["gpubot"], compose.Services["etcd"]
	if gpubot.Deploy.Replicas < 2 {
		t.Errorf("compose runs %d gpubot replicas, want 2", gpubot.Deploy.Replicas)
	}
	if !strings.Contains(etcd.Image, "etcd") || !slices.Contains(gpubot.DependsOn, "etcd") {
		t.Errorf("compose has no etcd service that gpubot depends on: %+v", compose.Services)
	}
	if !strings.HasPrefix(gpubot.Environment["ETCD_ENDPOINTS"], "http://etcd:") {
		t.Errorf("ETCD_ENDPOINTS = %q, want the etcd service", gpubot.Environment["ETCD_ENDPOINTS"])
	}
	env := imageEnvironment(t)
	for key, value := range readEnvFile(t, "../../deploy/"+gpubot.EnvFile+".example") {
		env[key] = value
	}
	for key, value := range gpubot.Environment {
		env[key] = value
	}
	loadsOnEtcd(t, "deploy/compose.yaml", env)
}

// readEnvFile reads a KEY=value file as Compose does, comments and blank lines aside.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, "=")
		env[key] = value
	}
	return env
}

// kubeObject is what the test reads of a Kubernetes manifest.
type kubeObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas int `yaml:"replicas"`
		Strategy struct {
			RollingUpdate struct {
				MaxUnavailable int `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Spec struct {
				Containers []struct {
					EnvFrom []struct {
						ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
						SecretRef    *struct{ Name string } `yaml:"secretRef"`
					} `yaml:"envFrom"`
					ReadinessProbe struct {
						HTTPGet struct{ Path string } `yaml:"httpGet"`
					} `yaml:"readinessProbe"`
					LivenessProbe struct {
						HTTPGet struct{ Path string } `yaml:"httpGet"`
					} `yaml:"livenessProbe"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func TestKubernetesManifestsRunTwoReplicasOnEtcd(t *testing.T) {
	var deployment, configMap, secret kubeObject
	readYAML(t, "../../deploy/kubernetes/deployment.yaml", &deployment)
	readYAML(t, "../../deploy/kubernetes/configmap.yaml", &configMap)
	readYAML(t, "../../deploy/kubernetes/secret.yaml", &secret)
	if deployment.Kind != "Deployment" || configMap.Kind != "ConfigMap" || secret.Kind != "Secret" {
		t.Fatalf("kinds %q, %q, %q", deployment.Kind, configMap.Kind, secret.Kind)
	}
	if deployment.Spec.Replicas < 2 || deployment.Spec.Strategy.RollingUpdate.MaxUnavailable != 0 {
		t.Errorf("the Deployment runs %d replicas with maxUnavailable %d; want 2, and 0 so a rollout keeps both answering",
			deployment.Spec.Replicas, deployment.Spec.Strategy.RollingUpdate.MaxUnavailable)
	}
	containers := deployment.Spec.Template.Spec.Containers
	if len(containers) != 1 {
		t.Fatalf("%d containers, want gpubot alone", len(containers))
	}
	c := containers[0]
	var fromConfigMap, fromSecret string
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef != nil {
			fromConfigMap = from.ConfigMapRef.Name
		}
		if from.SecretRef != nil {
			fromSecret = from.SecretRef.Name
		}
	}
	if fromConfigMap != configMap.Metadata.Name || fromSecret != secret.Metadata.Name {
		t.Errorf("the Deployment reads ConfigMap %q and Secret %q; the files define %q and %q",
			fromConfigMap, fromSecret, configMap.Metadata.Name, secret.Metadata.Name)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes ask %q and %q, want /readyz and /healthz", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}
	for _, key := range secretSettings {
		if _, inConfigMap := configMap.Data[key]; inConfigMap {
			t.Errorf("%s is in the ConfigMap; it is a secret", key)
		}
	}
	env := imageEnvironment(t)
	for key, value := range configMap.Data {
		env[key] = value
	}
	for key, value := range secret.StringData {
		env[key] = value
	}
	loadsOnEtcd(t, "deploy/kubernetes", env)
}
