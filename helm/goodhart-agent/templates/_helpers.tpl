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

{{/* The source type after extraConfig is merged; the agent's default is jsonl. */}}
{{- define "goodhart-agent.sourceType" -}}
{{- $type := "" }}
{{- if kindIs "map" .Values.config.source }}
{{- $type = .Values.config.source.type }}
{{- end }}
{{- if .Values.extraConfig }}
{{- $extra := fromYaml .Values.extraConfig }}
{{- if and (kindIs "map" $extra.source) $extra.source.type }}
{{- $type = $extra.source.type }}
{{- end }}
{{- end }}
{{- $type | default "jsonl" }}
{{- end }}

{{/* "true" when the agent runs in a pod of its own (standalone or gateway), not in the application's. */}}
{{- define "goodhart-agent.isServer" -}}
{{- if has .Values.mode (list "standalone" "gateway") }}true{{ end }}
{{- end }}

{{/* The app.kubernetes.io/component of the agent's own pods and Service. */}}
{{- define "goodhart-agent.component" -}}
{{- ternary "gateway" "agent" (eq .Values.mode "gateway") }}
{{- end }}

{{/* True when the source is a receiver (http_push or otlp): the agent listens for records. */}}
{{- define "goodhart-agent.isReceiver" -}}
{{- if has (include "goodhart-agent.sourceType" .) (list "http_push" "otlp") }}true{{ end }}
{{- end }}

{{/* The receiver's named port: goodhart-push (http_push) or goodhart-otlp (otlp). */}}
{{- define "goodhart-agent.receiverPortName" -}}
{{- ternary "goodhart-otlp" "goodhart-push" (eq (include "goodhart-agent.sourceType" .) "otlp") }}
{{- end }}

{{/* The receiver's port number: ports.otlp for otlp, ports.push for http_push. */}}
{{- define "goodhart-agent.receiverPort" -}}
{{- ternary .Values.ports.otlp .Values.ports.push (eq (include "goodhart-agent.sourceType" .) "otlp") | int }}
{{- end }}

{{/* True when the receiver is served on the pod's network (standalone or gateway, http_push or otlp). */}}
{{- define "goodhart-agent.pushExposed" -}}
{{- if and (include "goodhart-agent.isServer" .) (include "goodhart-agent.isReceiver" .) }}true{{ end }}
{{- end }}

{{/*
"true" when the agent runs in never-down mode (`run --on-error serve`): a sidecar with
sidecar.onError serve. A config that cannot run then leaves the agent up and serving /metrics
(goodhart_config_valid 0) instead of crash-looping in the application's pod. Standalone and
gateway always fail fast (exit 2), where a deploy notices it.
*/}}
{{- define "goodhart-agent.neverDown" -}}
{{- if and (eq .Values.mode "sidecar") (eq .Values.sidecar.onError "serve") }}true{{ end }}
{{- end }}

{{/* "true" when this sidecar forwards to a gateway (sidecar.forwarder.enabled). */}}
{{- define "goodhart-agent.forwarder" -}}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.forwarder.enabled }}true{{ end }}
{{- end }}

{{/* The environment variable holding the forwarder's bearer token (forward.token_env). */}}
{{- define "goodhart-agent.forwardTokenEnv" -}}GOODHART_FORWARD_TOKEN{{- end }}

{{/*
"true" when this release installs the PrometheusRule and the dashboards. They must exist once per
Prometheus and Grafana, not once per application that adds a sidecar (identical recording rules
from two PrometheusRules collide; two dashboards share one uid). auto: the gateway or standalone
release installs them, a sidecar release does not.
*/}}
{{- define "goodhart-agent.installShared" -}}
{{- $install := .Values.installRulesAndDashboards }}
{{- if kindIs "bool" $install }}
{{- if $install }}true{{ end }}
{{- else if include "goodhart-agent.isServer" . }}true
{{- end }}
{{- end }}

{{/*
The agent config as YAML: values.config, deep-merged with extraConfig, plus the keys the chart owns
(listen, state_dir, and source.listen for http_push and otlp).
*/}}
{{- define "goodhart-agent.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.extraConfig }}
{{- $extra := fromYaml .Values.extraConfig }}
{{- if hasKey $extra "Error" }}
{{- fail (printf "extraConfig is not a YAML mapping: %v" (get $extra "Error")) }}
{{- end }}
{{- $config = mustMergeOverwrite $config $extra }}
{{- end }}
{{- if not (kindIs "map" $config.source) }}
{{- fail "config.source is required: the agent needs a source of live records (jsonl, http_push, http_pull or otlp)" }}
{{- end }}
{{- $type := include "goodhart-agent.sourceType" . }}
{{- /* keys of the other source types (left over from the defaults) are dropped */}}
{{- if ne $type "jsonl" }}
{{- $_ := unset $config.source "path" }}
{{- end }}
{{- if ne $type "http_pull" }}
{{- $_ := unset $config.source "url" }}
{{- end }}
{{- if and (eq .Values.mode "gateway") (ne $type "http_push") }}
{{- fail "mode gateway needs config.source.type: http_push (the forwarders push to it)" }}
{{- end }}
{{- if include "goodhart-agent.isReceiver" . }}
{{- $host := ternary "0.0.0.0" "127.0.0.1" (eq (include "goodhart-agent.isServer" .) "true") }}
{{- $_ := set $config.source "listen" (printf "%s:%s" $host (include "goodhart-agent.receiverPort" .)) }}
{{- end }}
{{- if eq $type "jsonl" }}
{{- $dir := trimSuffix "/" .Values.sidecar.handoff.mountPath }}
{{- if not $config.source.path }}
{{- fail "config.source.path is required when config.source.type is jsonl" }}
{{- end }}
{{- if not (hasPrefix (printf "%s/" $dir) $config.source.path) }}
{{- fail (printf "config.source.path %q must lie under sidecar.handoff.mountPath %q (the agent only sees the hand-off volume)" $config.source.path .Values.sidecar.handoff.mountPath) }}
{{- end }}
{{- end }}
{{- /* Every environment variable the config names (judge keys, source tokens and headers) must
come from secretEnv or extraEnv: the agent reads secrets only from its environment. */}}
{{- if include "goodhart-agent.forwarder" . }}
{{- $fw := .Values.sidecar.forwarder }}
{{- if not $fw.url }}
{{- fail "sidecar.forwarder.url is required when sidecar.forwarder.enabled: the gateway's push endpoint, e.g. http://goodhart-gateway.monitoring:10101/v1/records" }}
{{- end }}
{{- $forward := dict }}
{{- if kindIs "map" $config.forward }}
{{- $forward = $config.forward }}
{{- end }}
{{- $_ := set $forward "url" $fw.url }}
{{- if $fw.tokenSecret.name }}
{{- $_ := set $forward "token_env" (include "goodhart-agent.forwardTokenEnv" .) }}
{{- end }}
{{- $_ := set $config "forward" $forward }}
{{- end }}
{{- $defined := keys .Values.secretEnv }}
{{- if and (include "goodhart-agent.forwarder" .) .Values.sidecar.forwarder.tokenSecret.name }}
{{- $defined = append $defined (include "goodhart-agent.forwardTokenEnv" .) }}
{{- end }}
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
{{- with $config.source.token_env }}
{{- $wanted = append $wanted (list "config.source.token_env" .) }}
{{- end }}
{{- if kindIs "map" $config.forward }}
{{- with $config.forward.token_env }}
{{- $wanted = append $wanted (list "config.forward.token_env" .) }}
{{- end }}
{{- end }}
{{- range $header, $env := $config.source.headers_env }}
{{- $wanted = append $wanted (list (printf "config.source.headers_env.%s" $header) $env) }}
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
(dict "ctx" <context> "native" <bool> "standalone" <bool>); "standalone" means a pod of the agent's
own (standalone or gateway).

Probes. Standalone, gateway and a sidecar with sidecar.onError exit: startupProbe and livenessProbe
on /healthz, readinessProbe on /readyz (the Service sends pushes only to a ready agent).
A never-down sidecar (sidecar.onError serve, the default) gets only the livenessProbe on /healthz,
which answers 200 from the moment the listener is up, config or not. Kubernetes' native-sidecar
rules are why (docs: concepts/workloads/pods/sidecar-containers):
  - the kubelet starts the next init container, and then the application's containers, once a
    restartable init container is "started": its process runs and no startupProbe is defined, or
    its startupProbe succeeded. A startupProbe would make the application wait for the agent, and
    wait for ever if the agent never answered; without one the application starts right away;
  - a sidecar's readinessProbe counts for the Pod's Ready condition, so a failing /readyz would
    take the application out of its Service. Without one the container is ready while it runs;
  - a failing livenessProbe restarts only the agent's container, never the application.
Secrets are optional references there: a Secret that does not exist leaves its variable unset
(the agent reports it) instead of stopping the container from being created.
*/}}
{{- define "goodhart-agent.containerSpec" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values -}}
{{- $neverDown := and (not .standalone) (eq $v.sidecar.onError "serve") }}
{{- $forwarder := and (not .standalone) (include "goodhart-agent.forwarder" $ctx) }}
- name: {{ $v.sidecar.containerName }}
  image: {{ include "goodhart-agent.image" $ctx | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  {{- if $neverDown }}
  args: ["run", "--config", "{{ include "goodhart-agent.configDir" $ctx }}/config.yaml", "--on-error", "serve", "--retry-seconds", "{{ $v.sidecar.retrySeconds }}"]
  {{- else }}
  args: ["run", "--config", "{{ include "goodhart-agent.configDir" $ctx }}/config.yaml"]
  {{- end }}
  ports:
    - name: goodhart
      containerPort: {{ $v.ports.metrics }}
      protocol: TCP
    {{- if include "goodhart-agent.pushExposed" $ctx }}
    - name: {{ include "goodhart-agent.receiverPortName" $ctx }}
      containerPort: {{ include "goodhart-agent.receiverPort" $ctx }}
      protocol: TCP
    {{- end }}
  env:
    - name: GOODHART_LISTEN
      value: "0.0.0.0:{{ $v.ports.metrics }}"
    - name: GOODHART_STATE_DIR
      value: {{ include "goodhart-agent.stateDir" $ctx }}
    {{- if $forwarder }}
    # The pod's identity, for the records the forwarder sends to the gateway.
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- with $v.sidecar.forwarder.tokenSecret }}
    {{- if .name }}
    - name: {{ include "goodhart-agent.forwardTokenEnv" $ctx }}
      valueFrom:
        secretKeyRef:
          name: {{ .name }}
          key: {{ .key }}
          {{- if $neverDown }}
          optional: true
          {{- end }}
    {{- end }}
    {{- end }}
    {{- end }}
    {{- range $name, $ref := $v.secretEnv }}
    - name: {{ $name }}
      valueFrom:
        secretKeyRef:
          name: {{ $ref.name }}
          key: {{ $ref.key }}
          {{- if $neverDown }}
          optional: true
          {{- end }}
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
  {{- if not $neverDown }}
  startupProbe:
    httpGet:
      path: /healthz
      port: goodhart
    {{- toYaml $v.probes.startup | nindent 4 }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: goodhart
    {{- toYaml $v.probes.liveness | nindent 4 }}
  {{- if not $neverDown }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: goodhart
    {{- toYaml $v.probes.readiness | nindent 4 }}
  {{- end }}
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
    {{- if include "goodhart-agent.neverDown" . }}
    # A ConfigMap that is missing (not installed yet, another namespace) leaves the directory
    # empty; the never-down agent reports the unreadable file and picks it up once it appears.
    optional: true
    {{- end }}
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
{{- if include "goodhart-agent.installShared" . }}
{{- include "goodhart-agent.gate" (list .Values.prometheusRule.enabled "monitoring.coreos.com/v1/PrometheusRule" .) }}
{{- end }}
{{- end }}

{{- define "goodhart-agent.dashboardsEnabled" -}}
{{- if and .Values.dashboards.enabled (include "goodhart-agent.installShared" .) (.Files.Glob "files/dashboards/*.json") }}true{{ end }}
{{- end }}
