{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "facevault.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart unless the release name already contains the chart
name. Truncated to 63 characters.
*/}}
{{- define "facevault.fullname" -}}
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

{{- define "facevault.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "facevault.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facevault.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "facevault.labels" -}}
helm.sh/chart: {{ include "facevault.chart" . }}
{{ include "facevault.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: facevault
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "facevault.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "facevault.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "facevault.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Secret holding the server certificate and key (also cert-manager's target).
*/}}
{{- define "facevault.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "facevault.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/*
Secret name of one key file: its existingSecret or <fullname>-<suffix>.
Usage: include "facevault.keySecretName" (list $ .Values.keys.keyring "keyring")
*/}}
{{- define "facevault.keySecretName" -}}
{{- $root := index . 0 }}
{{- $spec := index . 1 }}
{{- $suffix := index . 2 }}
{{- default (printf "%s-%s" (include "facevault.fullname" $root) $suffix) $spec.existingSecret }}
{{- end }}

{{/*
Where things are mounted. The config directory holds only facevault.toml; every
other volume has its own directory so no mount nests inside another.
*/}}
{{- define "facevault.configDir" -}}/etc/facevault{{- end }}
{{- define "facevault.mountRoot" -}}/var/run/facevault{{- end }}

{{/*
True when the client CA comes from the server TLS Secret itself.
*/}}
{{- define "facevault.clientCaFromTlsSecret" -}}
{{- if and (not .Values.tls.clientCa.existingSecret) (not .Values.tls.clientCa.existingConfigMap) }}true{{- end }}
{{- end }}

{{/*
Path of the client CA bundle inside the container.
*/}}
{{- define "facevault.clientCaPath" -}}
{{- if include "facevault.clientCaFromTlsSecret" . -}}
{{ include "facevault.mountRoot" . }}/tls/{{ .Values.tls.clientCa.key }}
{{- else -}}
{{ include "facevault.mountRoot" . }}/client-ca/{{ .Values.tls.clientCa.key }}
{{- end }}
{{- end }}

{{/*
Port of a URL (scheme://[userinfo@]host[:port][/path]), or the given default.
Usage: include "facevault.urlPort" (list "rediss://r:6380" 6379)
*/}}
{{- define "facevault.urlPort" -}}
{{- $url := index . 0 }}
{{- $default := index . 1 }}
{{- $rest := regexReplaceAll "^[a-zA-Z][a-zA-Z0-9+.-]*://" $url "" }}
{{- $hostport := regexReplaceAll "/.*$" $rest "" }}
{{- $hostport = regexReplaceAll "^.*@" $hostport "" }}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" }}
{{- default (toString $default) $port }}
{{- end }}

{{/*
FACEVAULT_REDIS_URL with the password spliced in as $(REDIS_PASSWORD), which
the kubelet expands from the env var defined just before it.
rediss://host:6380 -> rediss://:$(REDIS_PASSWORD)@host:6380
rediss://user@host:6380 -> rediss://user:$(REDIS_PASSWORD)@host:6380
*/}}
{{- define "facevault.redisUrlWithPassword" -}}
{{- $url := .Values.redis.url }}
{{- $parts := regexSplit "://" $url 2 }}
{{- $scheme := index $parts 0 }}
{{- $rest := index $parts 1 }}
{{- $authority := regexReplaceAll "/.*$" $rest "" }}
{{- if contains "@" $authority }}
{{- $user := regexReplaceAll "@.*$" $rest "" }}
{{- $after := regexReplaceAll "^[^@]*@" $rest "" }}
{{- printf "%s://%s:$(REDIS_PASSWORD)@%s" $scheme $user $after }}
{{- else }}
{{- printf "%s://:$(REDIS_PASSWORD)@%s" $scheme $rest }}
{{- end }}
{{- end }}

{{/*
TOML scalars. Helm reads numbers from YAML as float64, so integers are cast
(the service's integer fields refuse 1e+06) and floats always carry a point.
*/}}
{{- define "facevault.tomlInt" -}}
{{- int64 . }}
{{- end }}

{{- define "facevault.tomlFloat" -}}
{{- $s := toString (float64 .) }}
{{- if regexMatch "^-?[0-9]+$" $s }}{{ $s }}.0{{ else }}{{ $s }}{{ end }}
{{- end }}

{{- define "facevault.tomlBool" -}}
{{- if . }}true{{ else }}false{{ end }}
{{- end }}

{{/*
Fail early on combinations the schema cannot express.
*/}}
{{- define "facevault.validate" -}}
{{- $keyring := include "facevault.keySecretName" (list . .Values.keys.keyring "keyring") }}
{{- $transform := include "facevault.keySecretName" (list . .Values.keys.transformSecret "transform") }}
{{- if eq $keyring $transform }}
{{- fail (printf "keys.transformSecret must be a different Secret from keys.keyring (both are %q): the transform secret is kept apart from the keyring (split knowledge)" $keyring) }}
{{- end }}
{{- if and .Values.redis.password.existingSecret .Values.redis.urlSecret.existingSecret }}
{{- fail "set either redis.password.existingSecret or redis.urlSecret.existingSecret, not both" }}
{{- end }}
{{- if and .Values.tls.clientCa.existingSecret .Values.tls.clientCa.existingConfigMap }}
{{- fail "set either tls.clientCa.existingSecret or tls.clientCa.existingConfigMap, not both" }}
{{- end }}
{{- if and .Values.tls.crls.existingSecret .Values.tls.crls.existingConfigMap }}
{{- fail "set either tls.crls.existingSecret or tls.crls.existingConfigMap, not both" }}
{{- end }}
{{- if and (or .Values.tls.crls.existingSecret .Values.tls.crls.existingConfigMap) (not .Values.tls.crls.keys) }}
{{- fail "tls.crls.keys must list the CRL files to mount from the Secret/ConfigMap" }}
{{- end }}
{{- if and .Values.redis.tls.ca.existingSecret .Values.redis.tls.ca.existingConfigMap }}
{{- fail "set either redis.tls.ca.existingSecret or redis.tls.ca.existingConfigMap, not both" }}
{{- end }}
{{- if eq (int .Values.server.grpcPort) (int .Values.server.healthPort) }}
{{- fail "server.healthPort must differ from server.grpcPort: the health port is plaintext" }}
{{- end }}
{{- if and .Values.telemetry.prometheus.enabled (has (int .Values.telemetry.prometheus.port) (list (int .Values.server.grpcPort) (int .Values.server.healthPort))) }}
{{- fail "telemetry.prometheus.port must differ from server.grpcPort and server.healthPort: the metrics port is plaintext HTTP of its own" }}
{{- end }}
{{- if and .Values.telemetry.prometheus.serviceMonitor.enabled (not .Values.telemetry.prometheus.enabled) }}
{{- fail "telemetry.prometheus.serviceMonitor.enabled needs telemetry.prometheus.enabled: without it the service serves no /metrics to scrape" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.certManager.enabled (not .Values.certManager.issuerRef.name) }}
{{- fail "certManager.issuerRef.name is required when certManager.enabled" }}
{{- end }}
{{- /*
Key epochs: an erasure reaches every copy of Redis once the epochs that could
have wrapped its DEKs are retired, at most keys.epochDays + keys.maxRewrapDays
after it (plus deletion.gracePeriodSecs before it runs). That must end before
the deletion deadline. The shortest span of N working days is a week without
holidays from a Sunday night: N + 2 * floor((N - 1) / 5) days (19 for 15). A sum
that does not fit that week is refused here; the service checks every request
day of the coming year against the real calendar at start-up.
*/}}
{{- $working := int .Values.deletion.workingDays }}
{{- $spanDays := add $working (mul 2 (div (sub $working 1) 5)) }}
{{- $windowDays := add (int .Values.keys.epochDays) (int .Values.keys.maxRewrapDays) }}
{{- $windowSecs := add (mul $windowDays 86400) (int64 .Values.deletion.gracePeriodSecs) }}
{{- if gt (int64 $windowSecs) (int64 (mul $spanDays 86400)) }}
{{- fail (printf "keys.epochDays (%d) + keys.maxRewrapDays (%d) + deletion.gracePeriodSecs (%d s) do not end before the %d-working-day deletion deadline of a request on a Sunday night (%d days later): copies of Redis made before that erasure would stay readable past the deadline; shorten keys.epochDays or keys.maxRewrapDays" (int .Values.keys.epochDays) (int .Values.keys.maxRewrapDays) (int64 .Values.deletion.gracePeriodSecs) $working $spanDays) }}
{{- end }}
{{- end }}
