{{/*
Names and labels, as in the bitnami and prometheus-community charts.
*/}}

{{/* The chart name (app.kubernetes.io/name). */}}
{{- define "esm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full resource name: RELEASE-esm, or RELEASE when the release name already contains the chart
name; at most 63 characters (DNS label).
*/}}
{{- define "esm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "esm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "esm.labels" -}}
helm.sh/chart: {{ include "esm.chart" . }}
{{ include "esm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: esm
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels that select this release's esm pods (immutable in the Deployment selector). */}}
{{- define "esm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "esm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "esm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "esm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The container image: repository:tag (tag default: appVersion), or repository@digest. */}}
{{- define "esm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion (toString .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding config.yaml and the handler modules. */}}
{{- define "esm.configMapName" -}}
{{- printf "%s-config" (include "esm.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The configuration file's content: `config` from values, with reload.watch forced on in hotReload
mode (esm's own file watch is then how a change arrives).
*/}}
{{- define "esm.configYaml" -}}
{{- $cfg := deepCopy (default (dict) .Values.config) }}
{{- if eq .Values.configReload "hotReload" }}
{{- $reload := deepCopy (default (dict) (get $cfg "reload")) }}
{{- $_ := set $reload "watch" true }}
{{- $_ := set $cfg "reload" $reload }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The ConfigMap key of a handler file: its path with "/" spelled "__" (keys cannot hold "/"); the
volume's `items` put it back at its path under /etc/esm.
*/}}
{{- define "esm.handlerKey" -}}
{{- replace "/" "__" . }}
{{- end }}

{{/* "true" when the configuration has a Kinesis or DynamoDB Streams mapping, else empty. */}}
{{- define "esm.hasStreams" -}}
{{- $found := false }}
{{- range $m := (default (list) (get (default (dict) .Values.config) "event_source_mappings")) }}
{{- $arn := toString (get $m "EventSourceArn") }}
{{- if or (contains ":kinesis:" $arn) (contains ":dynamodb:" $arn) }}
{{- $found = true }}
{{- end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}

{{/* "true" when the configuration has an SQS mapping, else empty. */}}
{{- define "esm.hasSqs" -}}
{{- $found := false }}
{{- range $m := (default (list) (get (default (dict) .Values.config) "event_source_mappings")) }}
{{- if contains ":sqs:" (toString (get $m "EventSourceArn")) }}
{{- $found = true }}
{{- end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}

{{/* "true" when the configuration names a DynamoDB lease table (state.dynamodb), else empty. */}}
{{- define "esm.hasLeaseTable" -}}
{{- if dig "state" "dynamodb" "" (default (dict) .Values.config) }}true{{ end }}
{{- end }}

{{/*
The HTTP port from config.http.listen (HOST:PORT; esm's default is 127.0.0.1:9100). The container
port, probes and Service use it, so the listen address must be reachable from outside the pod.
*/}}
{{- define "esm.httpPort" -}}
{{- $listen := toString (dig "http" "listen" "127.0.0.1:9100" (default (dict) .Values.config)) }}
{{- if not (regexMatch "^(\\[[0-9A-Fa-f:.]+\\]|[^:\\[\\]]+):[0-9]+$" $listen) }}
{{- fail (printf "config.http.listen %q must be a literal HOST:PORT such as 0.0.0.0:9100: the chart derives the container port, the probes and the Service from it" $listen) }}
{{- end }}
{{- $host := trimAll "[]" (regexReplaceAll ":[0-9]+$" $listen "") }}
{{- $port := int (regexFind "[0-9]+$" $listen) }}
{{- if or (hasPrefix "127." $host) (eq $host "localhost") (eq $host "::1") }}
{{- fail (printf "config.http.listen %q binds the loopback interface: in a pod the kubelet's probes and Prometheus could not reach /healthz, /readyz and /metrics; use 0.0.0.0:%d" $listen $port) }}
{{- end }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "config.http.listen %q: the port must be 1-65535 (0 picks a random port, which probes cannot follow)" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* shutdown.grace_period of the configuration (esm's default 25 s when unset). */}}
{{- define "esm.shutdownGracePeriod" -}}
{{- float64 (dig "shutdown" "grace_period" 25 (default (dict) .Values.config)) }}
{{- end }}

{{/*
terminationGracePeriodSeconds: longer than esm's drain, so SIGKILL never cuts the final
checkpoints and lease releases short. Default: ceil(grace_period) + 15.
*/}}
{{- define "esm.terminationGracePeriodSeconds" -}}
{{- $grace := float64 (include "esm.shutdownGracePeriod" .) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int (ceil $grace)) 15 }}
{{- else }}
{{- $given := .Values.terminationGracePeriodSeconds }}
{{- if le (float64 $given) $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than the configuration's shutdown.grace_period (%v s): Kubernetes would kill esm (SIGKILL) before it drains in-flight batches, writes its final checkpoints and releases its leases; leave it unset for grace_period + 15" $given $grace) }}
{{- end }}
{{- int $given }}
{{- end }}
{{- end }}

{{/* The most replicas that may run: KEDA's maximum, or replicaCount. */}}
{{- define "esm.maxReplicas" -}}
{{- if .Values.keda.enabled }}{{ int .Values.keda.maxReplicaCount }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* The PodDisruptionBudget is on when asked, or (null) when more than one replica may run. */}}
{{- define "esm.pdbEnabled" -}}
{{- $enabled := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $enabled }}
{{- if gt (int (include "esm.maxReplicas" .)) 1 }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{/* The label matchers that restrict KEDA's queries to this release's targets. */}}
{{- define "esm.metricSelector" -}}
{{- default (printf "namespace=%q,service=%q" .Release.Namespace (include "esm.fullname" .)) .Values.keda.prometheus.metricSelector }}
{{- end }}

{{/* Whether KEDA scales on the SQS backlog / stream lag (null: when the config has such mappings). */}}
{{- define "esm.kedaSqs" -}}
{{- $on := .Values.keda.sqs.enabled }}
{{- if kindIs "invalid" $on }}{{ include "esm.hasSqs" . }}{{ else if $on }}true{{ end }}
{{- end }}
{{- define "esm.kedaStreams" -}}
{{- $on := .Values.keda.streams.enabled }}
{{- if kindIs "invalid" $on }}{{ include "esm.hasStreams" . }}{{ else if $on }}true{{ end }}
{{- end }}

{{/* The update strategy: as given, else Recreate for SQLite state on an existing claim. */}}
{{- define "esm.updateStrategy" -}}
{{- if .Values.updateStrategy }}
{{- toYaml .Values.updateStrategy }}
{{- else if and .Values.persistence.existingClaim (not (include "esm.hasLeaseTable" .)) }}
type: Recreate
{{- end }}
{{- end }}

{{/*
Checks of values that the schema cannot express: each fails the render with the reason.
Included by the Deployment, so every install and upgrade runs them.
*/}}
{{- define "esm.validateValues" -}}
{{- $streams := include "esm.hasStreams" . }}
{{- $leases := include "esm.hasLeaseTable" . }}
{{- $max := int (include "esm.maxReplicas" .) }}
{{- if and $streams (not $leases) (gt $max 1) }}
{{- fail (printf "%s is %d, but several replicas with Kinesis or DynamoDB Streams mappings need config.state.dynamodb, a lease table they share shards through (e.g. state: {sqlite: null, dynamodb: {table: esm-leases}}): SQLite checkpoints (state.sqlite) belong to one pod, so each replica would read every shard on its own" (ternary "keda.maxReplicaCount" "replicaCount" (.Values.keda.enabled | default false)) $max) }}
{{- end }}
{{- $sqlite := toString (dig "state" "sqlite" "" (default (dict) .Values.config)) }}
{{- if and $streams (not $leases) $sqlite (not (hasPrefix "/" $sqlite)) (not (hasPrefix "$" $sqlite)) }}
{{- fail (printf "config.state.sqlite %q is relative: esm resolves it against the config file's folder, /etc/esm, a read-only ConfigMap volume; use /var/lib/esm/esm-state.db (the chart's writable state volume)" $sqlite) }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if lt (int .Values.keda.maxReplicaCount) (int .Values.keda.minReplicaCount) }}
{{- fail (printf "keda.maxReplicaCount (%v) must not be below keda.minReplicaCount (%v)" .Values.keda.maxReplicaCount .Values.keda.minReplicaCount) }}
{{- end }}
{{- if not .Values.keda.prometheus.serverAddress }}
{{- fail "keda.prometheus.serverAddress is required with keda.enabled: KEDA reads esm's metrics back from that Prometheus (e.g. http://prometheus-operated.monitoring.svc:9090)" }}
{{- end }}
{{- if not (or (include "esm.kedaSqs" .) (include "esm.kedaStreams" .)) }}
{{- fail "keda.enabled needs a trigger: the configuration has no SQS or stream mapping, and keda.sqs.enabled / keda.streams.enabled are not true" }}
{{- end }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) }}
{{- fail "podDisruptionBudget: set either maxUnavailable or minAvailable (the other to null), not both" }}
{{- end }}
{{- $keys := dict }}
{{- range $path, $_ := .Values.handlers }}
{{- if eq $path "config.yaml" }}
{{- fail "handlers: config.yaml is the configuration file; give the handler module another name" }}
{{- end }}
{{- $key := include "esm.handlerKey" $path }}
{{- if hasKey $keys $key }}
{{- fail (printf "handlers: %q and %q map to the same ConfigMap key %q; rename one" (get $keys $key) $path $key) }}
{{- end }}
{{- $_ := set $keys $key $path }}
{{- end }}
{{- end }}

{{/*
The config volume's `items`: config.yaml, and each handler at its path (a folder in its name
becomes a folder under /etc/esm, so `handlers/orders.py` is importable as `handlers.orders`).
*/}}
{{- define "esm.configItems" -}}
items:
  - key: config.yaml
    path: config.yaml
{{- range $path, $_ := .Values.handlers }}
  - key: {{ include "esm.handlerKey" $path }}
    path: {{ $path }}
{{- end }}
{{- end }}
