{{/*
Helpers. Every name starts with "goodhart-agent." so that they never collide with the helpers of a
chart that includes this one.

The sidecar helpers (goodhart-agent.sidecarContainer, .sidecarVolumes, .sidecarPodLabels,
.sidecarIsNative) are meant to be called from other charts too. Their context needs:
  Values        this chart's values (from a parent chart: index .Values "goodhart-agent")
  Release       the release (for object names)
  Capabilities  the capabilities (only read when sidecar.native is "auto")
Chart is optional. The chart name is fixed, so names come out the same from either chart:
  {{- $g := dict "Values" (index .Values "goodhart-agent") "Release" .Release "Capabilities" .Capabilities }}
*/}}

{{/* The chart name: "goodhart-agent" unless nameOverride. */}}
{{- define "goodhart-agent.name" -}}
{{- default "goodhart-agent" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The fully qualified name of the release's objects, at most 63 characters. */}}
{{- define "goodhart-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "goodhart-agent.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version */}}
{{- define "goodhart-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades, used in Deployment selectors. */}}
{{- define "goodhart-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "goodhart-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels of every object. */}}
{{- define "goodhart-agent.labels" -}}
helm.sh/chart: {{ include "goodhart-agent.chart" . }}
{{ include "goodhart-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: goodhart-agent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the PodMonitor/ServiceMonitor and PrometheusRule: common + monitoringLabels. */}}
{{- define "goodhart-agent.monitoringLabels" -}}
{{ include "goodhart-agent.labels" . }}
{{- with .Values.monitoringLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "goodhart-agent.image" -}}
{{- $chart := .Chart | default dict }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := .Values.image.tag | default $chart.AppVersion }}
{{- if not $tag }}
{{- fail "image.tag is empty and no chart appVersion is known: set image.tag" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Fixed paths inside the agent container; the image declares the state path as a VOLUME. */}}
{{- define "goodhart-agent.configDir" -}}/etc/goodhart-agent{{- end }}
{{- define "goodhart-agent.stateDir" -}}/var/lib/goodhart-agent{{- end }}

{{/* Name of the ConfigMap holding config.yaml. */}}
{{- define "goodhart-agent.configMapName" -}}
{{- include "goodhart-agent.fullname" . }}
{{- end }}

{{/*
The user's agent config: values.config deep-merged with extraConfig. With a `sources` list the
single `source` (the default in values.yaml) is dropped: the agent takes one or the other.
*/}}
{{- define "goodhart-agent.userConfig" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.extraConfig }}
{{- $extra := fromYaml .Values.extraConfig }}
{{- if hasKey $extra "Error" }}
{{- fail (printf "extraConfig is not a YAML mapping: %v" (get $extra "Error")) }}
{{- end }}
{{- $config = mustMergeOverwrite $config $extra }}
{{- end }}
{{- if $config.sources }}
{{- $_ := unset $config "source" }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The types of the configured sources, comma-separated; the agent's default type is jsonl. */}}
{{- define "goodhart-agent.sourceTypes" -}}
{{- $config := fromYaml (include "goodhart-agent.userConfig" .) }}
{{- $types := list }}
{{- if $config.sources }}
{{- range $config.sources }}{{ $types = append $types ((kindIs "map" .) | ternary (.type | default "jsonl") "jsonl") }}{{ end }}
{{- else if kindIs "map" $config.source }}
{{- $types = append $types ($config.source.type | default "jsonl") }}
{{- end }}
{{- join "," $types }}
{{- end }}

{{/* The one source's type ("jsonl", ...), or "sources" when a list of sources is configured. */}}
{{- define "goodhart-agent.sourceType" -}}
{{- $config := fromYaml (include "goodhart-agent.userConfig" .) }}
{{- if $config.sources }}sources{{ else }}{{ include "goodhart-agent.sourceTypes" . | default "jsonl" }}{{ end }}
{{- end }}

{{/* True when the push listener is served on the pod's network (standalone + an http_push source). */}}
{{- define "goodhart-agent.pushExposed" -}}
{{- if and (eq .Values.mode "standalone") (has "http_push" (splitList "," (include "goodhart-agent.sourceTypes" .))) }}true{{ end }}
{{- end }}

{{/* True when the OTLP/HTTP receiver is served on the pod's network (standalone + an otlp source). */}}
{{- define "goodhart-agent.otlpExposed" -}}
{{- if and (eq .Values.mode "standalone") (has "otlp" (splitList "," (include "goodhart-agent.sourceTypes" .))) }}true{{ end }}
{{- end }}

{{/*
The agent config as YAML: the user's config plus the keys the chart owns (listen, state_dir, and
each push source's listen: ports.push for http_push, ports.otlp for otlp).
*/}}
{{- define "goodhart-agent.config" -}}
{{- $config := fromYaml (include "goodhart-agent.userConfig" .) }}
{{- $items := list }}
{{- $prefix := "config.source" }}
{{- if $config.sources }}
{{- $items = $config.sources }}
{{- $prefix = "config.sources" }}
{{- else if kindIs "map" $config.source }}
{{- $items = list $config.source }}
{{- else }}
{{- fail "config.source is required: the agent needs a source of live records (jsonl, http_push, http_pull or otlp)" }}
{{- end }}
{{- $host := ternary "0.0.0.0" "127.0.0.1" (eq .Values.mode "standalone") }}
{{- $types := splitList "," (include "goodhart-agent.sourceTypes" .) }}
{{- range $kind := list "http_push" "otlp" }}
{{- $count := 0 }}
{{- range $types }}{{ if eq . $kind }}{{ $count = add1 $count }}{{ end }}{{ end }}
{{- if gt $count 1 }}
{{- fail (printf "at most one %s source: the chart gives it one port (ports.%s)" $kind (ternary "push" "otlp" (eq $kind "http_push"))) }}
{{- end }}
{{- end }}
{{- /* Every environment variable the config names (judge keys, source tokens, headers, Langfuse
keys) must come from secretEnv or extraEnv: the agent reads secrets only from its environment. */}}
{{- $defined := keys .Values.secretEnv }}
{{- range .Values.extraEnv }}{{ $defined = append $defined .name }}{{ end }}
{{- $wanted := list }}
{{- range $i, $audit := $config.audits }}
{{- range $producer := list "llm_judge" "http_grader" }}
{{- $spec := index $audit $producer | default dict }}
{{- with $spec.api_key_env }}
{{- $wanted = append $wanted (list (printf "config.audits[%d].%s.api_key_env" $i $producer) .) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $source := $items }}
{{- $key := ternary (printf "%s[%d]" $prefix $i) $prefix (eq $prefix "config.sources") }}
{{- $type := $source.type | default "jsonl" }}
{{- /* keys of the other source types (left over from the defaults) are dropped */}}
{{- if ne $type "jsonl" }}
{{- $_ := unset $source "path" }}
{{- end }}
{{- if ne $type "http_pull" }}
{{- $_ := unset $source "url" }}
{{- end }}
{{- if eq $type "http_push" }}
{{- $_ := set $source "listen" (printf "%s:%d" $host (int $.Values.ports.push)) }}
{{- end }}
{{- if eq $type "otlp" }}
{{- $_ := set $source "listen" (printf "%s:%d" $host (int $.Values.ports.otlp)) }}
{{- end }}
{{- if eq $type "jsonl" }}
{{- $dir := trimSuffix "/" $.Values.sidecar.handoff.mountPath }}
{{- if not $source.path }}
{{- fail (printf "%s.path is required when %s.type is jsonl" $key $key) }}
{{- end }}
{{- if not (hasPrefix (printf "%s/" $dir) $source.path) }}
{{- fail (printf "%s.path %q must lie under sidecar.handoff.mountPath %q (the agent only sees the hand-off volume)" $key $source.path $.Values.sidecar.handoff.mountPath) }}
{{- end }}
{{- end }}
{{- with $source.token_env }}
{{- $wanted = append $wanted (list (printf "%s.token_env" $key) .) }}
{{- end }}
{{- range $header, $env := $source.headers_env }}
{{- $wanted = append $wanted (list (printf "%s.headers_env.%s" $key $header) $env) }}
{{- end }}
{{- range $secret := list "public_key_env" "secret_key_env" }}
{{- with (index ($source.langfuse | default dict) $secret) }}
{{- $wanted = append $wanted (list (printf "%s.langfuse.%s" $key $secret) .) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $wanted }}
{{- if not (has (index . 1) $defined) }}
{{- fail (printf "%s is %s but neither secretEnv nor extraEnv sets %s: map it to a Secret in secretEnv (name, key)" (index . 0) (index . 1) (index . 1)) }}
{{- end }}
{{- end }}
{{- $_ := set $config "listen" (printf "0.0.0.0:%d" (int .Values.ports.metrics)) }}
{{- $_ := set $config "state_dir" (include "goodhart-agent.stateDir" .) }}
{{- toYaml $config }}
{{- end }}

{{/*
"true" when the agent runs as a Kubernetes native sidecar (an init container with
restartPolicy: Always): sidecar.native true, or "auto" on Kubernetes 1.29 or newer.
*/}}
{{- define "goodhart-agent.sidecarIsNative" -}}
{{- $native := .Values.sidecar.native }}
{{- if kindIs "bool" $native }}
{{- if $native }}true{{ end }}
{{- else if semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version }}true
{{- end }}
{{- end }}

{{/* Pod labels that the sidecar-mode PodMonitor selects on. */}}
{{- define "goodhart-agent.sidecarPodLabels" -}}
{{- with .Values.sidecar.podLabels }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
The agent container, as one item of a containers (or initContainers) list. Internal: called with
(dict "ctx" <context> "native" <bool> "standalone" <bool>).
*/}}
{{- define "goodhart-agent.containerSpec" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values -}}
- name: {{ $v.sidecar.containerName }}
  image: {{ include "goodhart-agent.image" $ctx | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  args: ["run", "--config", "{{ include "goodhart-agent.configDir" $ctx }}/config.yaml"]
  ports:
    - name: goodhart
      containerPort: {{ $v.ports.metrics }}
      protocol: TCP
    {{- if include "goodhart-agent.pushExposed" $ctx }}
    - name: goodhart-push
      containerPort: {{ $v.ports.push }}
      protocol: TCP
    {{- end }}
    {{- if include "goodhart-agent.otlpExposed" $ctx }}
    - name: goodhart-otlp
      containerPort: {{ $v.ports.otlp }}
      protocol: TCP
    {{- end }}
  env:
    - name: GOODHART_LISTEN
      value: "0.0.0.0:{{ $v.ports.metrics }}"
    - name: GOODHART_STATE_DIR
      value: {{ include "goodhart-agent.stateDir" $ctx }}
    {{- range $name, $ref := $v.secretEnv }}
    - name: {{ $name }}
      valueFrom:
        secretKeyRef:
          name: {{ $ref.name }}
          key: {{ $ref.key }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumeMounts:
    - name: goodhart-config
      mountPath: {{ include "goodhart-agent.configDir" $ctx }}
      readOnly: true
    - name: goodhart-state
      mountPath: {{ include "goodhart-agent.stateDir" $ctx }}
    {{- if and (not .standalone) (eq (include "goodhart-agent.sourceType" $ctx) "jsonl") }}
    - name: {{ $v.sidecar.handoff.volumeName }}
      mountPath: {{ $v.sidecar.handoff.mountPath }}
      readOnly: true
    {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  startupProbe:
    httpGet:
      path: /healthz
      port: goodhart
    {{- toYaml $v.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: goodhart
    {{- toYaml $v.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: goodhart
    {{- toYaml $v.probes.readiness | nindent 4 }}
{{- end }}

{{/*
The sidecar container as one list item. Put it under initContainers when
goodhart-agent.sidecarIsNative says "true", else under containers.
*/}}
{{- define "goodhart-agent.sidecarContainer" -}}
{{- include "goodhart-agent.containerSpec" (dict "ctx" . "native" (eq (include "goodhart-agent.sidecarIsNative" .) "true") "standalone" false) }}
{{- end }}

{{/*
The pod volumes the sidecar needs, as list items: its config, its state and (jsonl source, when
sidecar.handoff.create) the hand-off emptyDir that the application mounts too.
*/}}
{{- define "goodhart-agent.sidecarVolumes" -}}
- name: goodhart-config
  configMap:
    name: {{ include "goodhart-agent.configMapName" . }}
- name: goodhart-state
  emptyDir:
    sizeLimit: {{ .Values.state.sizeLimit }}
{{- if and (eq (include "goodhart-agent.sourceType" .) "jsonl") .Values.sidecar.handoff.create }}
- name: {{ .Values.sidecar.handoff.volumeName }}
  emptyDir:
    sizeLimit: {{ .Values.sidecar.handoff.sizeLimit }}
{{- end }}
{{- end }}

{{/* "true" when a capability-gated object is on: enabled true, or "auto" and the API is served.
Called with (list <enabled value> <group/version/Kind> <context>). */}}
{{- define "goodhart-agent.gate" -}}
{{- $enabled := index . 0 }}
{{- $api := index . 1 }}
{{- $ctx := index . 2 }}
{{- if kindIs "bool" $enabled }}
{{- if $enabled }}true{{ end }}
{{- else if $ctx.Capabilities.APIVersions.Has $api }}true
{{- end }}
{{- end }}

{{- define "goodhart-agent.monitorEnabled" -}}
{{- include "goodhart-agent.gate" (list .Values.monitor.enabled (printf "monitoring.coreos.com/v1/%s" .Values.monitor.kind) .) }}
{{- end }}

{{- define "goodhart-agent.prometheusRuleEnabled" -}}
{{- include "goodhart-agent.gate" (list .Values.prometheusRule.enabled "monitoring.coreos.com/v1/PrometheusRule" .) }}
{{- end }}
